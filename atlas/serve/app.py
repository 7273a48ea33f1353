"""`atlas serve`: a read-only HTTP API over one atlas database.

Every request reads through the store's sandboxed read-only engine. Requests in flight share one
open of the file (:mod:`atlas.serve.lease`), which is closed whenever none is, and is let go as
soon as an atlas writer waits; so ingests and ablations write while the server runs, and the next
request sees their results. Models and tasks are named by id or unambiguous name (see
:mod:`atlas.store.identity`). Errors are JSON: 404 unknown, 409 ambiguous, 422 bad parameters,
503 database unavailable; never a traceback.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Body, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from atlas.errors import Ambiguous, AtlasError, NotFound, Unavailable

MAX_PAGE = 10_000
SCHEMA_RECHECK_S = 2.0
RUN_CACHE_BYTES = 512 << 20  # scores and ranks: about 180 runs of a 32 × 11,008 model
SET_CACHE_BYTES = 128 << 20  # member masks: about 360 sets of that size
FORMATS = ("json", "csv", "parquet")
# Changes whenever a model, a set, a complete run or an evaluation is added, removed or replaced
# (ids are never reused within a file; the times tell a replaced file apart).
ATLAS_STAMP = """
    SELECT * FROM
        (SELECT count(*), sum(model_id), sum(epoch_us(created_at)) FROM models),
        (SELECT count(*), sum(set_id), sum(epoch_us(created_at)) FROM neuron_sets),
        (SELECT count(*), sum(run_id), sum(epoch_us(started_at)) FROM runs
         WHERE status = 'complete'),
        (SELECT count(*), sum(eval_id), sum(epoch_us(created_at)) FROM evaluations)"""


def _status(err: AtlasError) -> int:
    if isinstance(err, NotFound):
        return 404
    if isinstance(err, Ambiguous):
        return 409
    if isinstance(err, Unavailable):
        return 503
    return 422


def create_app(db: str | Path, *, sql_timeout_s: float = 10.0, sql_max_rows: int = 10_000,
               threads: int | None = 1) -> FastAPI:
    """The API of the atlas database at ``db`` (read-only). ``threads``: DuckDB threads per
    query (1: concurrent requests, not one query, share the cores; None: one per core)."""
    from atlas import query as q
    from atlas.intervene.report import build_report, render
    from atlas.query import catalog
    from atlas.query.core import resolve_model, rows
    from atlas.query.neurons import flat_mask, flat_scores, model_sets_and_runs, neuron_profile
    from atlas.query.sql import json_safe, run_sql_on
    from atlas.serve.cache import LRU, array_bytes, counted
    from atlas.serve.lease import SharedOpen
    from atlas.store.db import check_read_schema, connect
    from atlas.store.identity import task_labels

    app = FastAPI(title="atlas", description="Task-specific neurons of language models: "
                  "read-only access to one atlas database.", version="1", docs_url=None,
                  redoc_url=None)
    _offline_docs(app)

    @app.exception_handler(AtlasError)
    async def atlas_error(request: Request, err: AtlasError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=_status(err))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        return JSONResponse({"error": f"{type(err).__name__}: {err}"}, status_code=500)

    engines: list = []  # one sandboxed engine; it holds no connection between requests
    shared: list[SharedOpen] = []
    checked = [0.0]  # when the schema was last found current
    identity: list = [None]  # (device, inode) of the file the schema check last saw
    run_cache = LRU(RUN_CACHE_BYTES, array_bytes)
    set_cache = LRU(SET_CACHE_BYTES, array_bytes)
    overlap_cache = LRU(256, counted)
    catalog_cache = LRU(64, counted)
    model_cache = LRU(256, counted)
    answer_cache = LRU(64 << 20, len)  # JSON answers (overlaps, reports) for one atlas stamp

    @contextmanager
    def engine() -> Iterator[Any]:
        """One sandboxed connection for the whole request, closed when it is answered."""
        if not engines:
            engines.append(connect(db, read_only=True, threads=threads))
            shared.append(SharedOpen(engines[0].connect, Path(db)))
        with shared[0].hold():
            now = _file_identity(db)  # a stat per request: a swapped file is noticed at once
            if now != identity[0] or time.monotonic() - checked[0] > SCHEMA_RECHECK_S:
                if identity[0] is not None and now != identity[0] and shared[0].users > 1:
                    raise Unavailable(f"the database file {db} was replaced while requests "
                                      "were in flight; retry")
                check_read_schema(engines[0], Path(db))
                checked[0], identity[0] = time.monotonic(), now
            with engines[0].connect() as conn:
                yield _Pinned(conn)

    def run_scores(eng: Any, run: dict, shape: tuple[int, int]) -> tuple:
        """A complete run's (scores, ranks), flat [n_layers * d_mlp], from memory."""
        return run_cache.get((run["run_id"], str(run["started_at"])),
                             lambda: flat_scores(eng, run["run_id"], shape))

    def atlas_stamp(eng: Any) -> tuple:
        """What keys the memory of this atlas's state (one small query)."""
        return tuple(eng.conn.exec_driver_sql(ATLAS_STAMP).one())

    def sets_and_runs(eng: Any, model_id: int, stamp: tuple) -> tuple[list[dict], list[dict]]:
        """A model's sets and complete runs, from memory while the atlas's ``stamp`` is
        unchanged."""
        return catalog_cache.get((model_id, stamp), lambda: model_sets_and_runs(eng, model_id))

    def set_mask(eng: Any, row: dict, shape: tuple[int, int]) -> np.ndarray:
        """A set's members as a flat boolean mask [n_layers * d_mlp], from memory."""
        return set_cache.get((row["set_id"], str(row["created_at"])),
                             lambda: flat_mask(eng, row["set_id"], shape))

    def table(data: list[dict], request: Request, fmt: str | None, limit: int, offset: int,
              total: int | None = None) -> Response:
        fmt = fmt or ("csv" if "text/csv" in request.headers.get("accept", "") else "json")
        if fmt not in FORMATS:
            raise AtlasError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
        if fmt == "json":
            body = {"total": len(data) if total is None else total, "offset": offset,
                    "limit": limit, "rows": data}
            return Response(json.dumps(json_safe(body), default=str, allow_nan=False),
                            media_type="application/json")
        import pyarrow as pa

        from atlas.query.sql import write_table

        arrow = pa.Table.from_pylist([{k: _plain(v) for k, v in r.items()} for r in data])
        if fmt == "csv":
            return Response(write_table(arrow, "csv", None), media_type="text/csv")
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(arrow, buf)
        return Response(buf.getvalue(), media_type="application/vnd.apache.parquet")

    def paged(eng: Any, listing: catalog.Listing, request: Request, fmt: str | None, limit: int,
              offset: int) -> Response:
        sql, params = listing.sql, listing.params
        total = rows(eng, f"SELECT count(*) AS n FROM ({sql})", **params)[0]["n"]
        data = rows(eng, f"{sql} LIMIT {int(limit)} OFFSET {int(offset)}", **params)
        return table(data, request, fmt, limit, offset, total)

    Limit = Query(100, ge=1, le=MAX_PAGE)
    Offset = Query(0, ge=0)
    Fmt = Query(None, alias="format", description="json, csv or parquet")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return HTMLResponse((resources.files("atlas.serve") / "static" / "index.html").read_text(
            encoding="utf-8"))

    @app.get("/overview")
    def overview(request: Request, fmt: str = Fmt):
        """Models × tasks × methods with their runs' status."""
        with engine() as eng:
            data = rows(eng, """
                SELECT m.name AS model, m.dtype, r.method, count(*) AS runs,
                       count(*) FILTER (WHERE r.status = 'complete') AS complete,
                       count(*) FILTER (WHERE r.status = 'running') AS running,
                       count(*) FILTER (WHERE r.status = 'failed') AS failed,
                       count(DISTINCT r.task_id) AS tasks
                FROM runs r JOIN models m USING (model_id) GROUP BY ALL ORDER BY ALL""")
            data += rows(eng, """
                SELECT model, dtype, method, 0 AS runs, 0 AS complete, 0 AS running, 0 AS failed,
                       count(*) AS tasks
                FROM task_sets WHERE run_id IS NULL GROUP BY ALL ORDER BY ALL""")
        return table(data, request, fmt, len(data), 0)

    @app.get("/layers")
    def layers(request: Request, model: str, method: str = "cgvst", fmt: str = Fmt):
        """Per current set and layer: neurons, relative depth and share of the set."""
        with engine() as eng:
            info = resolve_model(eng, model)
            data = rows(eng, "SELECT task, layer, n, rel_depth, fraction FROM layer_counts "
                             "WHERE model_id = :mid AND method = :method ORDER BY task, layer",
                        mid=info["model_id"], method=method)
        names = sorted({r["task"] for r in data})
        labels = dict(zip(names, task_labels(names)))
        for r in data:
            r["task_label"] = labels[r["task"]]
        return table(data, request, fmt, len(data), 0)

    @app.get("/models")
    def models(request: Request, limit: int = Limit, offset: int = Offset, fmt: str = Fmt):
        with engine() as eng:
            return paged(eng, catalog.models(), request, fmt, limit, offset)

    @app.get("/tasks")
    def tasks(request: Request, limit: int = Limit, offset: int = Offset, fmt: str = Fmt):
        with engine() as eng:
            return paged(eng, catalog.tasks(), request, fmt, limit, offset)

    @app.get("/runs")
    def runs(request: Request, model: str | None = None, task: str | None = None,
             method: str | None = None, limit: int = Limit, offset: int = Offset, fmt: str = Fmt):
        with engine() as eng:
            return paged(eng, catalog.runs(eng, model, task, method), request, fmt, limit, offset)

    @app.get("/sets")
    def sets(request: Request, model: str | None = None, task: str | None = None,
             method: str | None = None, limit: int = Limit, offset: int = Offset, fmt: str = Fmt):
        with engine() as eng:
            return paged(eng, catalog.sets(eng, model, task, method), request, fmt, limit, offset)

    @app.get("/sets/{set_id}/members")
    def members(set_id: int, request: Request, limit: int = Query(MAX_PAGE, ge=1, le=MAX_PAGE),
                offset: int = Offset, fmt: str = Fmt):
        with engine() as eng:
            return paged(eng, catalog.members(eng, set_id), request, fmt, limit, offset)

    @app.get("/models/{model}/neurons/{layer}/{neuron}")
    def neuron(model: str, layer: int, neuron: int):
        with engine() as eng:
            stamp = atlas_stamp(eng)
            info = model_cache.get((model, stamp), lambda: resolve_model(eng, model))
            shape = (info["n_layers"], info["d_mlp"])
            sets, runs = sets_and_runs(eng, info["model_id"], stamp)
            profile = neuron_profile(info, layer, neuron, sets, runs,
                                     lambda row: set_mask(eng, row, shape),
                                     lambda run: run_scores(eng, run, shape))
        return JSONResponse(profile.as_dict())  # plain values: no encoder pass needed

    @app.get("/overlaps")
    def overlaps(model: str, method: str = "cgvst", measure: str = "jaccard"):
        with engine() as eng:
            def answer() -> bytes:
                info = resolve_model(eng, model)
                # Sets never change in place (a new set gets a new id): their ids, with their
                # creation times (a replaced file), key the matrix.
                ids = tuple((r["set_id"], str(r["created_at"])) for r in rows(
                    eng, "SELECT t.set_id, s.created_at FROM task_sets t JOIN neuron_sets s "
                         "USING (set_id) WHERE t.model_id = :mid AND t.method = :method "
                         "ORDER BY set_id", mid=info["model_id"], method=method))

                def compute() -> dict:
                    m = q.overlap_matrix(eng, model, method, measure)
                    return {"model": info["name"], "model_id": info["model_id"],
                            "method": method, "measure": measure, "tasks": m.tasks,
                            "labels": m.labels, "values": m.values.tolist()}
                matrix = overlap_cache.get((info["model_id"], method, measure, ids), compute)
                return json.dumps(matrix).encode()
            body = answer_cache.get(("overlaps", model, method, measure, atlas_stamp(eng)),
                                    answer)
        return Response(body, media_type="application/json")

    @app.get("/method-overlaps")
    def method_overlaps(request: Request, model: str, versus: list[str] = Query(...),
                        method: str = "cgvst", measure: str = "jaccard", fmt: str = Fmt):
        """Per task, the overlap of its ``method`` set with its set from each ``versus``."""
        with engine() as eng:
            data = q.method_overlap(eng, model, method, versus, measure)
        return table(data, request, fmt, len(data), 0)

    @app.get("/specificity")
    def specificity(request: Request, model: str, method: str = "cgvst", fmt: str = Fmt):
        with engine() as eng:
            data = q.specificity(eng, model, method)
        return table(data, request, fmt, len(data), 0)

    @app.get("/compare")
    def compare(model_a: str, model_b: str, method: str = "cgvst"):
        with engine() as eng:
            per_task = q.compare_models(eng, model_a, model_b, method)
            try:
                agreement = q.task_similarity_agreement(eng, model_a, model_b, method)
            except AtlasError as err:
                agreement = {"error": str(err)}
        return {"tasks": per_task, "task_similarity_agreement": agreement}

    @app.get("/reports")
    def reports(model: str, method: str = "cgvst", factor: float = 0.0,
                metric: str = "label_likelihood", config: str | None = None):
        with engine() as eng:  # intervals and tests are seeded: the same evaluations, the same report
            body = answer_cache.get(
                ("reports", model, method, factor, metric, config, atlas_stamp(eng)),
                lambda: render(build_report(eng, model, method, factor, metric, config), "json"))
        return Response(body, media_type="application/json")

    @app.get("/evaluations")
    def evaluations(request: Request, model: str | None = None, task: str | None = None,
                    method: str | None = None, limit: int = Limit, offset: int = Offset,
                    fmt: str = Fmt):
        with engine() as eng:
            return paged(eng, catalog.evaluations(eng, model, task, method), request, fmt, limit,
                         offset)

    @app.post("/sql")
    def sql(body: dict = Body(..., examples=[{"sql": "SELECT * FROM set_overlaps LIMIT 5"}])):
        statement = body.get("sql")
        if not isinstance(statement, str) or not statement.strip():
            raise AtlasError('give the query as {"sql": "SELECT ..."}')
        with engine() as eng:  # the request's own sandboxed connection
            result = run_sql_on(eng.conn.connection.driver_connection, statement,
                                timeout_s=sql_timeout_s, max_rows=sql_max_rows)
        truncated = (result.schema.metadata or {}).get(b"truncated") == b"true"
        data = [{k: _plain(v) for k, v in r.items()} for r in result.to_pylist()]
        return Response(json.dumps({"columns": result.column_names, "rows": json_safe(data),
                                    "truncated": truncated}, default=str, allow_nan=False),
                        media_type="application/json")

    return app


def _file_identity(db: str | Path) -> tuple[int, int] | None:
    """The file's (device, inode): changes when another file is moved into its place."""
    try:
        st = os.stat(db)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _Pinned:
    """An engine stand-in whose ``connect()`` hands out one open connection, so the query
    functions a request calls share it instead of opening the file again each."""

    def __init__(self, conn: Any):
        self.conn = conn

    @contextmanager
    def connect(self) -> Iterator[Any]:
        yield self.conn


def _offline_docs(app: FastAPI) -> None:
    """Interactive API docs at /docs with Swagger UI served from the installed
    swagger-ui-bundle package (no CDN)."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.openapi_version = "3.0.3"  # the packaged Swagger UI (4.x) renders OpenAPI 3.0
    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path),
              name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="atlas API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger/favicon-32x32.png")


def app_from_env() -> FastAPI:
    """The app for ``uvicorn --factory`` workers: settings from ``ATLAS_SERVE_*``."""
    import os

    return create_app(os.environ["ATLAS_SERVE_DB"],
                      sql_timeout_s=float(os.environ.get("ATLAS_SERVE_SQL_TIMEOUT", "10")),
                      sql_max_rows=int(os.environ.get("ATLAS_SERVE_SQL_MAX_ROWS", "10000")),
                      threads=int(os.environ.get("ATLAS_SERVE_THREADS", "1")) or None)


def _plain(value: Any) -> Any:
    """JSON/CSV-friendly values (decimals, timestamps, BLOBs and nested values as text or
    numbers)."""
    from atlas.query.sql import json_safe, json_value

    if isinstance(value, (dict, list)):
        return json.dumps(json_safe(value), default=json_value, allow_nan=False)
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return json_value(value)
