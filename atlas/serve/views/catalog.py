"""What the atlas holds: the overview, models, tasks, runs, sets and their members,
evaluations and layer profiles, as tables (JSON pages, CSV or Parquet)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request

from atlas.query import catalog
from atlas.serve.contract import (
    METHOD_SPEC,
    MODEL_SPEC,
    TASK_SPEC,
    EvaluationRow,
    Format,
    LayerRow,
    MemberRow,
    ModelRow,
    OverviewRow,
    RunRow,
    SetRow,
    TaskRow,
    table_answer,
)
from atlas.serve.responses import MAX_PAGE, Fmt, Limit, Offset, cached, paged, whole
from atlas.serve.state import AtlasState, state

router = APIRouter(tags=["catalog"])
ModelFilter = Query(None, description=MODEL_SPEC)
TaskFilter = Query(None, description=TASK_SPEC)
MethodFilter = Query(None, description=METHOD_SPEC)


@router.get("/overview", responses=table_answer(OverviewRow))
def overview(request: Request, fmt: Format | None = Fmt, st: AtlasState = Depends(state)):
    """Models × methods with their runs' status and task counts."""
    with st.request() as eng:
        return cached(st, eng, request, fmt,
                      lambda: whole(catalog.overview(eng), request, fmt, OverviewRow))


@router.get("/layers", responses=table_answer(LayerRow))
def layers(request: Request, model: str = Query(..., description=MODEL_SPEC),
           method: str = Query("cgvst", description=METHOD_SPEC), fmt: Format | None = Fmt,
           st: AtlasState = Depends(state)):
    """Per current set and layer: neurons, relative depth and share of the set."""
    with st.request() as eng:
        return cached(st, eng, request, fmt, lambda: whole(
            catalog.layer_profile(eng, model, method), request, fmt, LayerRow))


@router.get("/models", responses=table_answer(ModelRow))
def models(request: Request, limit: int = Limit, offset: int = Offset, fmt: Format | None = Fmt,
           st: AtlasState = Depends(state)):
    """The stored models (one per name, revision and dtype)."""
    with st.request() as eng:
        return cached(st, eng, request, fmt, lambda: paged(
            eng, catalog.models(), request, fmt, limit, offset))


@router.get("/tasks", responses=table_answer(TaskRow))
def tasks(request: Request, limit: int = Limit, offset: int = Offset, fmt: Format | None = Fmt,
          st: AtlasState = Depends(state)):
    """The stored tasks."""
    with st.request() as eng:
        return cached(st, eng, request, fmt, lambda: paged(
            eng, catalog.tasks(), request, fmt, limit, offset))


@router.get("/runs", responses=table_answer(RunRow))
def runs(request: Request, model: str | None = ModelFilter, task: str | None = TaskFilter,
         method: str | None = MethodFilter, limit: int = Limit, offset: int = Offset,
         fmt: Format | None = Fmt, st: AtlasState = Depends(state)):
    """Scoring runs, with everything each depends on."""
    with st.request() as eng:
        return cached(st, eng, request, fmt, lambda: paged(
            eng, catalog.runs(eng, model, task, method), request, fmt, limit, offset))


@router.get("/sets", responses=table_answer(SetRow))
def sets(request: Request, model: str | None = ModelFilter, task: str | None = TaskFilter,
         method: str | None = MethodFilter, limit: int = Limit, offset: int = Offset,
         fmt: Format | None = Fmt, st: AtlasState = Depends(state)):
    """Stored neuron sets with their sizes."""
    with st.request() as eng:
        return cached(st, eng, request, fmt, lambda: paged(
            eng, catalog.sets(eng, model, task, method), request, fmt, limit, offset))


@router.get("/sets/{set_id}/members", responses=table_answer(MemberRow))
def members(request: Request, set_id: int = Path(..., ge=0, le=2**31 - 1),
            limit: int = Query(MAX_PAGE, ge=1, le=MAX_PAGE, description="Rows per page."),
            offset: int = Offset, fmt: Format | None = Fmt, st: AtlasState = Depends(state)):
    """A set's neurons by (layer, neuron)."""
    with st.request() as eng:
        return cached(st, eng, request, fmt, lambda: paged(
            eng, catalog.members(eng, set_id), request, fmt, limit, offset))


@router.get("/evaluations", responses=table_answer(EvaluationRow))
def evaluations(request: Request, model: str | None = ModelFilter,
                task: str | None = TaskFilter, method: str | None = MethodFilter,
                limit: int = Limit, offset: int = Offset, fmt: Format | None = Fmt,
                st: AtlasState = Depends(state)):
    """Stored evaluations with their effects (task: the evaluated task)."""
    with st.request() as eng:
        return cached(st, eng, request, fmt, lambda: paged(
            eng, catalog.evaluations(eng, model, task, method), request, fmt, limit, offset))
