"""Questions across sets: overlaps between tasks and methods, task-specificity, two models
compared, and intervention reports. Every answer is made once per atlas state."""

from __future__ import annotations

import json
from enum import Enum

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from atlas import query as q
from atlas.errors import AtlasError
from atlas.query.catalog import set_versions
from atlas.query.core import resolve_model
from atlas.serve.contract import (
    METHOD_SPEC,
    MODEL_SPEC,
    TABLE_MEDIA,
    Comparison,
    Format,
    Measure,
    MethodOverlapRow,
    OverlapMatrix,
    Report,
    SpecificityRow,
    json_answer,
    table_answer,
)
from atlas.serve.responses import MEDIA, Fmt, cached, json_bytes, whole
from atlas.serve.state import AtlasState, state

router = APIRouter(tags=["analysis"])
Model = Query(..., description=MODEL_SPEC)
Method = Query("cgvst", description=METHOD_SPEC)


class JsonOnly(str, Enum):
    json = "json"


class ReportFormat(str, Enum):
    json = "json"
    csv = "csv"


NotTabular = Query(None, alias="format", description="json only: this answer is not a table.")


@router.get("/overlaps", responses=json_answer(OverlapMatrix, "The task × task matrix."))
def overlaps(request: Request, model: str = Model, method: str = Method,
             measure: Measure = Measure.jaccard, fmt: JsonOnly | None = NotTabular,
             st: AtlasState = Depends(state)):
    """The overlap of every pair of one model's current sets of one method."""
    with st.request() as eng:
        def answer() -> Response:
            info = resolve_model(eng, model)

            def compute() -> dict:
                m = q.overlap_matrix(eng, model, method, measure.value)
                return {"model": info["name"], "model_id": info["model_id"], "method": method,
                        "measure": measure.value, "tasks": m.tasks, "labels": m.labels,
                        "values": m.values.tolist()}
            key = ("overlap", info["model_id"], method, measure.value,
                   set_versions(eng, info["model_id"], method))
            return Response(json.dumps(st.computed(key, compute)).encode(),
                            media_type=MEDIA[Format.json])
        return cached(st, eng, request, Format.json, answer)


@router.get("/method-overlaps", responses=table_answer(MethodOverlapRow))
def method_overlaps(request: Request, model: str = Model,
                    versus: list[str] = Query(..., description="Methods to compare with."),
                    method: str = Method, measure: Measure = Measure.jaccard,
                    fmt: Format | None = Fmt, st: AtlasState = Depends(state)):
    """Per task, the overlap of its ``method`` set with its set from each ``versus``."""
    with st.request() as eng:
        return cached(st, eng, request, fmt, lambda: whole(
            q.method_overlap(eng, model, method, versus, measure.value), request, fmt,
            MethodOverlapRow))


@router.get("/specificity", responses=table_answer(SpecificityRow))
def specificity(request: Request, model: str = Model, method: str = Method,
                fmt: Format | None = Fmt, st: AtlasState = Depends(state)):
    """Per task: how much of its set no other task's set of the method shares."""
    with st.request() as eng:
        return cached(st, eng, request, fmt, lambda: whole(
            q.specificity(eng, model, method), request, fmt, SpecificityRow))


@router.get("/compare", responses=json_answer(Comparison, "Per task, and the Mantel test."))
def compare(request: Request, model_a: str = Query(..., description=MODEL_SPEC),
            model_b: str = Query(..., description=MODEL_SPEC), method: str = Method,
            fmt: JsonOnly | None = NotTabular, st: AtlasState = Depends(state)):
    """Two models' sets per shared task (depth, and index agreement for one shape), and
    whether they find the same tasks similar."""
    with st.request() as eng:
        def answer() -> Response:
            per_task = q.compare_models(eng, model_a, model_b, method)
            try:
                agreement = q.task_similarity_agreement(eng, model_a, model_b, method)
            except AtlasError as err:
                agreement = {"error": str(err)}
            return Response(json_bytes({"tasks": per_task,
                                        "task_similarity_agreement": agreement}),
                            media_type=MEDIA[Format.json])
        return cached(st, eng, request, Format.json, answer)


REPORT_MEDIA = {"text/csv": TABLE_MEDIA["text/csv"]}


@router.get("/reports", responses={**json_answer(Report, "The report (format=json), or its "
                                                         "matrix as CSV rows."),
                                   200: {"model": Report, "content": REPORT_MEDIA}})
def reports(request: Request, model: str = Model, method: str = Method,
            factor: float = Query(0.0, ge=-1e6, le=1e6, description="0 inhibits, > 1 "
                                                                    "amplifies."),
            metric: str = Query("label_likelihood", description="label_likelihood, "
                                "label_prob, exact_match or reference_em."),
            config: str | None = Query(None, description="An evaluation configuration's "
                                                         "hash when the model has several."),
            fmt: ReportFormat | None = Query(None, alias="format", description="json or csv."),
            st: AtlasState = Depends(state)):
    """Relative change of every evaluated task under every intervened set, random controls,
    and the summary tests."""
    from atlas.intervene.report import build_report, render

    kind = ReportFormat.csv if (fmt == ReportFormat.csv or fmt is None and "text/csv" in
                                request.headers.get("accept", "")) else ReportFormat.json
    with st.request() as eng:  # intervals and tests are seeded: the same evaluations, the same report
        return cached(st, eng, request, Format(kind.value), lambda: Response(
            render(build_report(eng, model, method, factor, metric, config), kind.value),
            media_type=MEDIA[Format(kind.value)]))
