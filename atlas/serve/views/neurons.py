"""One neuron: its scores, ranks and set memberships in every task and method of its model."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from atlas.query.neurons import neuron_profile
from atlas.serve.state import AtlasState, state

router = APIRouter()


@router.get("/models/{model}/neurons/{layer}/{neuron}")
def neuron(model: str, layer: int, neuron: int, st: AtlasState = Depends(state)):
    with st.request() as eng:
        stamp = st.stamp(eng)
        info = st.model(eng, model, stamp)
        shape = (info["n_layers"], info["d_mlp"])
        sets, runs = st.sets_and_runs(eng, info["model_id"], stamp)
        profile = neuron_profile(info, layer, neuron, sets, runs,
                                 lambda row: st.set_mask(eng, row, shape),
                                 lambda run: st.run_scores(eng, run, shape))
    return JSONResponse(profile.as_dict())  # plain values: no encoder pass needed
