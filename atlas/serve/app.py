"""`atlas serve`: a read-only HTTP API over one atlas database.

Every request reads through the store's sandboxed read-only engine. Requests in flight share one
open of the file (:mod:`atlas.serve.lease`), which is closed whenever none is, and is let go as
soon as an atlas writer waits; so ingests and ablations write while the server runs, and the next
request sees their results. Models and tasks are named by id or unambiguous name (see
:mod:`atlas.store.identity`). Errors are JSON: 404 unknown, 409 ambiguous, 422 bad parameters,
503 database unavailable; never a traceback.

The app is the routers of :mod:`atlas.serve.views` over one :class:`~atlas.serve.state.AtlasState`
(``app.state.atlas``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from atlas.errors import AtlasError
from atlas.serve.http import ConditionalGet, GZip, HeadAsGet
from atlas.serve.live import LiveModels
from atlas.serve.responses import error, status_of
from atlas.serve.state import AtlasState

log = logging.getLogger("atlas.serve")


def create_app(db: str | Path, *, sql_timeout_s: float = 10.0, sql_max_rows: int = 10_000,
               threads: int | None = 1, live: LiveModels | None = None,
               linger_s: float = 0.0) -> FastAPI:
    """The API of the atlas database at ``db`` (read-only).

    Args:
        db: the atlas file.
        sql_timeout_s: seconds a ``POST /sql`` statement may run.
        sql_max_rows: rows a ``POST /sql`` answer holds at most.
        threads: DuckDB threads per query (1: concurrent requests, not one query, share the
            cores; None: one per core).
        live: models loaded for ``POST /generate`` and ``POST /activations`` (none: those
            answer 404 with how to enable them).
        linger_s: seconds the file stays open after the last request in flight (at once
            closed when a writer in another process waits for it; 0: closed with the last
            request, so this process may open it otherwise between requests).

    Returns:
        The FastAPI app; its state is ``app.state.atlas``.
    """
    from atlas.serve.views import ROUTERS

    app = FastAPI(title="atlas", description="Task-specific neurons of language models: "
                  "read-only access to one atlas database.", version="1", docs_url=None,
                  redoc_url=None)
    app.state.atlas = AtlasState(db, sql_timeout_s=sql_timeout_s, sql_max_rows=sql_max_rows,
                                 threads=threads, live=live, linger_s=linger_s)
    _swagger_assets(app)

    _error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(ConditionalGet)
    app.add_middleware(GZip, minimum_size=1024)
    app.add_middleware(HeadAsGet)  # outermost: headers as the GET (compressed) would have them
    return app


def _error_handlers(app: FastAPI) -> None:
    """One error shape for everything: ``{"error": "..."}`` (see ``contract.ErrorBody``)."""

    @app.exception_handler(AtlasError)
    async def atlas_error(request: Request, err: AtlasError) -> JSONResponse:
        status = status_of(err)
        return error(str(err), status, {"Retry-After": "1"} if status == 429 else None)

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(request: Request, err: RequestValidationError) -> JSONResponse:
        return error(validation_message(err.errors()), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = {404: f"no such path {request.url.path}; the paths are listed at /docs",
                   405: f"{request.method} is not allowed on {request.url.path}"}
        return error(message.get(err.status_code, str(err.detail)), err.status_code,
                     getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s", request.url)
        return error("internal error; nothing was changed (the server's log has the details)",
                     500)


def validation_message(errors: list[dict]) -> str:
    """The framework's validation errors as one line: which parameter, and what it must be."""
    parts = []
    for e in errors:
        where, *path = e.get("loc", ("request",))
        name = ".".join(str(p) for p in path) or str(where)
        parts.append(f"bad {where} parameter '{name}': {e.get('msg', 'invalid')}")
    return "; ".join(parts) + "; see /docs for what each parameter takes"


def _swagger_assets(app: FastAPI) -> None:
    """Swagger UI's files, served from the installed swagger-ui-bundle package."""
    import swagger_ui_bundle
    from fastapi.staticfiles import StaticFiles

    app.openapi_version = "3.0.3"  # the packaged Swagger UI (4.x) renders OpenAPI 3.0
    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path),
              name="swagger")


def app_from_env() -> FastAPI:
    """The app for ``uvicorn --factory`` workers: settings from ``ATLAS_SERVE_*``."""
    return create_app(os.environ["ATLAS_SERVE_DB"],
                      sql_timeout_s=float(os.environ.get("ATLAS_SERVE_SQL_TIMEOUT", "10")),
                      sql_max_rows=int(os.environ.get("ATLAS_SERVE_SQL_MAX_ROWS", "10000")),
                      threads=int(os.environ.get("ATLAS_SERVE_THREADS", "1")) or None,
                      linger_s=float(os.environ.get("ATLAS_SERVE_LINGER", "0")))
