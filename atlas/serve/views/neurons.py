"""One neuron: its scores, ranks and set memberships in every task and method of its model."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse

from atlas.query.neurons import neuron_profile
from atlas.serve.contract import MODEL_SPEC, NeuronAnswer, json_answer
from atlas.serve.state import AtlasState, state

router = APIRouter(tags=["neurons"])


@router.get("/models/{model}/neurons/{layer}/{neuron}",
            responses=json_answer(NeuronAnswer, "The neuron's sets and scores."))
def neuron(model: str = Path(..., description=MODEL_SPEC),
           layer: int = Path(..., ge=0, le=2**15), neuron: int = Path(..., ge=0, le=2**31 - 1),
           st: AtlasState = Depends(state)):
    """A neuron's score and rank in every complete run of its model, and the sets it is in."""
    with st.request() as eng:
        stamp = st.stamp(eng)
        info = st.model(eng, model, stamp)
        shape = (info["n_layers"], info["d_mlp"])
        sets, runs = st.sets_and_runs(eng, info["model_id"], stamp)
        profile = neuron_profile(info, layer, neuron, sets, runs,
                                 lambda row: st.set_mask(eng, row, shape),
                                 lambda run: st.run_scores(eng, run, shape))
    return JSONResponse(profile.as_dict())  # plain values: no encoder pass needed
