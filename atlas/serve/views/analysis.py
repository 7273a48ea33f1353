"""Questions across sets: overlaps between tasks and methods, task-specificity, two models
compared, and intervention reports."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from atlas import query as q
from atlas.errors import AtlasError
from atlas.query.catalog import set_versions
from atlas.query.core import resolve_model
from atlas.serve.responses import Fmt, whole
from atlas.serve.state import AtlasState, state

router = APIRouter()


@router.get("/overlaps")
def overlaps(model: str, method: str = "cgvst", measure: str = "jaccard",
             st: AtlasState = Depends(state)):
    with st.request() as eng:
        def answer() -> bytes:
            info = resolve_model(eng, model)

            def compute() -> dict:
                m = q.overlap_matrix(eng, model, method, measure)
                return {"model": info["name"], "model_id": info["model_id"], "method": method,
                        "measure": measure, "tasks": m.tasks, "labels": m.labels,
                        "values": m.values.tolist()}
            key = ("overlap", info["model_id"], method, measure,
                   set_versions(eng, info["model_id"], method))
            return json.dumps(st.computed(key, compute)).encode()
        body = st.answer(("overlaps", model, method, measure), st.stamp(eng), answer)
    return Response(body, media_type="application/json")


@router.get("/method-overlaps")
def method_overlaps(request: Request, model: str, versus: list[str] = Query(...),
                    method: str = "cgvst", measure: str = "jaccard", fmt: str = Fmt,
                    st: AtlasState = Depends(state)):
    """Per task, the overlap of its ``method`` set with its set from each ``versus``."""
    with st.request() as eng:
        data = q.method_overlap(eng, model, method, versus, measure)
    return whole(data, request, fmt)


@router.get("/specificity")
def specificity(request: Request, model: str, method: str = "cgvst", fmt: str = Fmt,
                st: AtlasState = Depends(state)):
    with st.request() as eng:
        data = q.specificity(eng, model, method)
    return whole(data, request, fmt)


@router.get("/compare")
def compare(model_a: str, model_b: str, method: str = "cgvst", st: AtlasState = Depends(state)):
    with st.request() as eng:
        per_task = q.compare_models(eng, model_a, model_b, method)
        try:
            agreement = q.task_similarity_agreement(eng, model_a, model_b, method)
        except AtlasError as err:
            agreement = {"error": str(err)}
    return {"tasks": per_task, "task_similarity_agreement": agreement}


@router.get("/reports")
def reports(model: str, method: str = "cgvst", factor: float = 0.0,
            metric: str = "label_likelihood", config: str | None = None,
            st: AtlasState = Depends(state)):
    from atlas.intervene.report import build_report, render

    with st.request() as eng:  # intervals and tests are seeded: the same evaluations, the same report
        body = st.answer(("reports", model, method, factor, metric, config), st.stamp(eng),
                         lambda: render(build_report(eng, model, method, factor, metric, config),
                                        "json"))
    return Response(body, media_type="application/json")
