"""One neuron: its scores, ranks and set memberships in every task and method of its model."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from atlas.query import evidence
from atlas.query.neurons import neuron_profile
from atlas.query.overlap import set_pair
from atlas.serve.contract import (
    MODEL_SPEC,
    NeuronAnswer,
    NeuronEvidenceAnswer,
    SetNeuronOrder,
    SetNeurons,
    SetPairAnswer,
    TokenNeurons,
    json_answer,
)
from atlas.serve.responses import cached, json_bytes
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


@router.get("/models/{model}/neurons/{layer}/{neuron}/evidence",
            responses=json_answer(NeuronEvidenceAnswer, "What the neuron responds to and writes."))
def neuron_evidence(model: str = Path(..., description=MODEL_SPEC),
                    layer: int = Path(..., ge=0, le=2**15),
                    neuron: int = Path(..., ge=0, le=2**31 - 1),
                    st: AtlasState = Depends(state)) -> JSONResponse:
    """A neuron's exemplars of both signs with per-token activations, quantile samples,
    density per task and the tokens its output promotes and suppresses (`atlas describe`)."""
    with st.request() as eng:
        stamp = st.stamp(eng)
        found = evidence.neuron_evidence(eng, st.model(eng, model, stamp), layer, neuron,
                                         st.evidence.source(eng, stamp))
    return JSONResponse(found.as_dict())


@router.get("/models/{model}/token-neurons",
            responses=json_answer(TokenNeurons, "Neurons whose exemplars peak on a token."))
def token_neurons(model: str = Path(..., description=MODEL_SPEC),
                  token: str = Query(..., min_length=1, max_length=200,
                                     description="The token's text (spaces and case ignored)."),
                  sign: int = Query(1, ge=-1, le=1, description="1: highest, -1: lowest."),
                  limit: int = Query(20, ge=1, le=1000),
                  st: AtlasState = Depends(state)) -> JSONResponse:
    """The neurons whose stored exemplars peak most often and most strongly on ``token``."""
    with st.request() as eng:
        stamp = st.stamp(eng)
        found = evidence.neurons_for_token(eng, st.model(eng, model, stamp), token, limit,
                                           sign or 1, st.evidence.source(eng, stamp))
    return JSONResponse({"model": model, "token": token, "sign": sign or 1, "rows": found})


@router.get("/sets/{set_id}/neurons",
            responses=json_answer(SetNeurons, "The set's neurons with a summary each."))
def set_neurons(request: Request, set_id: int = Path(..., ge=0, le=2**31 - 1),
                order: SetNeuronOrder = Query(SetNeuronOrder.score),
                limit: int = Query(40, ge=1, le=1000), st: AtlasState = Depends(state)):
    """A set's neurons, highest score (or most specific to its task) first, each with the peak
    tokens of its top exemplars and the tokens its output promotes (`atlas describe`)."""
    with st.request() as eng:
        return cached(st, eng, request, None, lambda: Response(json_bytes({
            "set_id": set_id, "order": order.value,
            "rows": evidence.set_neurons(eng, set_id, limit, order.value)}),
            media_type="application/json"))


@router.get("/sets/{set_a}/pair/{set_b}",
            responses=json_answer(SetPairAnswer, "The neurons both sets hold, and each alone."))
def pair(request: Request, set_a: int = Path(..., ge=0, le=2**31 - 1),
         set_b: int = Path(..., ge=0, le=2**31 - 1),
         limit: int = Query(200, ge=1, le=10000, description="Neurons listed per part."),
         st: AtlasState = Depends(state)):
    """Two sets side by side: the neurons in both and in each alone, with their counts."""
    with st.request() as eng:
        return cached(st, eng, request, None, lambda: Response(
            json_bytes(asdict(set_pair(eng, set_a, set_b, limit))),
            media_type="application/json"))
