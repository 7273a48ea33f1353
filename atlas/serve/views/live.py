"""Trying sets live on a served model (``atlas serve --model``): ``GET /live`` says what is
loaded, ``POST /generate`` and ``POST /activations`` answer as ``atlas try`` and
``atlas activations`` do. The database and the model are only read.

:mod:`atlas.intervene.trying` (and with it torch) is imported by a live request, once a model
is loaded: a server without models starts without torch."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from atlas.errors import AtlasError
from atlas.serve.contract import (
    ERRORS,
    LIVE_ERRORS,
    ActivationsAnswer,
    ActivationsRequest,
    LiveStatus,
    TryAnswer,
    TryRequest,
)
from atlas.serve.live import HOW_TO_ENABLE
from atlas.serve.state import AtlasState, state

router = APIRouter(tags=["live"])
DEFAULT_NEW_TOKENS = 32


@router.get("/live", responses={200: {"model": LiveStatus, "description": "What is loaded."},
                                **ERRORS})
def live_status(st: AtlasState = Depends(state)) -> JSONResponse:
    """The models loaded for trying sets live, and the bounds of a request."""
    models = []
    if st.live.names:
        from atlas.intervene.trying import model_identity

        with st.request() as eng:
            models = [asdict(model_identity(eng, m)) for m in st.live.loaded()]
    return JSONResponse({"models": models, "limits": asdict(st.live.limits),
                         "enable": None if models else HOW_TO_ENABLE})


@router.post("/generate", responses={200: {"model": TryAnswer,
                                           "description": "The outputs side by side."},
                                     **LIVE_ERRORS})
def generate(body: TryRequest, st: AtlasState = Depends(state)) -> JSONResponse:
    """Generate from a prompt with the model as it is and with stored sets (or single neurons)
    scaled by ``factor``, in one batch; each step's token and top next tokens, and where the
    outputs part. One request per model at a time (429 when it stays busy)."""
    limits = st.live.limits
    new_tokens = body.max_new_tokens or min(DEFAULT_NEW_TOKENS, limits.max_new_tokens)
    with st.live.using(body.model) as loaded, st.request() as eng:
        if new_tokens > limits.max_new_tokens:
            raise AtlasError(f"max_new_tokens {new_tokens} is above this server's limit of "
                             f"{limits.max_new_tokens}")
        from atlas.intervene.trying import TryOptions, parse_neuron, try_sets

        options = TryOptions(factor=body.factor, union=body.union,
                             max_new_tokens=new_tokens, top_k=body.top_k,
                             temperature=body.temperature, seed=body.seed, chat=body.chat)
        answer = try_sets(eng, loaded, body.prompt, body.sets,
                          [parse_neuron(n) for n in body.neurons], options,
                          limits.max_prompt_tokens)
    return JSONResponse(answer.to_dict())


@router.post("/activations", responses={200: {"model": ActivationsAnswer,
                                              "description": "Per token, the neurons' activity."},
                                        **LIVE_ERRORS})
def activations(body: ActivationsRequest, st: AtlasState = Depends(state)) -> JSONResponse:
    """The activations of stored sets' neurons (or single neurons) on every token of a text."""
    with st.live.using(body.model) as loaded, st.request() as eng:
        from atlas.intervene.trying import parse_neuron, set_activations

        answer = set_activations(eng, loaded, body.text, body.sets,
                                 [parse_neuron(n) for n in body.neurons], body.chat,
                                 st.live.limits.max_prompt_tokens)
    return JSONResponse(answer.to_dict(body.top))
