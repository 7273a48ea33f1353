"""What the atlas holds: the overview, models, tasks, runs, sets and their members,
evaluations and layer profiles, as tables (JSON pages, CSV or Parquet)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from atlas.query import catalog
from atlas.serve.responses import MAX_PAGE, Fmt, Limit, Offset, paged, whole
from atlas.serve.state import AtlasState, state

router = APIRouter()


@router.get("/overview")
def overview(request: Request, fmt: str = Fmt, st: AtlasState = Depends(state)):
    """Models × tasks × methods with their runs' status."""
    with st.request() as eng:
        data = catalog.overview(eng)
    return whole(data, request, fmt)


@router.get("/layers")
def layers(request: Request, model: str, method: str = "cgvst", fmt: str = Fmt,
           st: AtlasState = Depends(state)):
    """Per current set and layer: neurons, relative depth and share of the set."""
    with st.request() as eng:
        data = catalog.layer_profile(eng, model, method)
    return whole(data, request, fmt)


@router.get("/models")
def models(request: Request, limit: int = Limit, offset: int = Offset, fmt: str = Fmt,
           st: AtlasState = Depends(state)):
    with st.request() as eng:
        return paged(eng, catalog.models(), request, fmt, limit, offset)


@router.get("/tasks")
def tasks(request: Request, limit: int = Limit, offset: int = Offset, fmt: str = Fmt,
          st: AtlasState = Depends(state)):
    with st.request() as eng:
        return paged(eng, catalog.tasks(), request, fmt, limit, offset)


@router.get("/runs")
def runs(request: Request, model: str | None = None, task: str | None = None,
         method: str | None = None, limit: int = Limit, offset: int = Offset, fmt: str = Fmt,
         st: AtlasState = Depends(state)):
    with st.request() as eng:
        return paged(eng, catalog.runs(eng, model, task, method), request, fmt, limit, offset)


@router.get("/sets")
def sets(request: Request, model: str | None = None, task: str | None = None,
         method: str | None = None, limit: int = Limit, offset: int = Offset, fmt: str = Fmt,
         st: AtlasState = Depends(state)):
    with st.request() as eng:
        return paged(eng, catalog.sets(eng, model, task, method), request, fmt, limit, offset)


@router.get("/sets/{set_id}/members")
def members(set_id: int, request: Request, limit: int = Query(MAX_PAGE, ge=1, le=MAX_PAGE),
            offset: int = Offset, fmt: str = Fmt, st: AtlasState = Depends(state)):
    with st.request() as eng:
        return paged(eng, catalog.members(eng, set_id), request, fmt, limit, offset)


@router.get("/evaluations")
def evaluations(request: Request, model: str | None = None, task: str | None = None,
                method: str | None = None, limit: int = Limit, offset: int = Offset,
                fmt: str = Fmt, st: AtlasState = Depends(state)):
    with st.request() as eng:
        listing = catalog.evaluations(eng, model, task, method)
        return paged(eng, listing, request, fmt, limit, offset)
