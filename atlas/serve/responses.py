"""How the server writes answers: tables as JSON pages, CSV or Parquet; errors as one JSON shape."""

from __future__ import annotations

import io
import json
from typing import Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse, Response

from atlas.errors import Ambiguous, AtlasError, NotFound, Unavailable
from atlas.query.catalog import Listing
from atlas.query.core import rows
from atlas.query.sql import json_safe, json_value, write_table

MAX_PAGE = 10_000
FORMATS = ("json", "csv", "parquet")

Limit = Query(100, ge=1, le=MAX_PAGE)
Offset = Query(0, ge=0)
Fmt = Query(None, alias="format", description="json, csv or parquet")


def status_of(err: AtlasError) -> int:
    """The HTTP status of an atlas error: 404 unknown, 409 ambiguous, 503 database unavailable,
    422 any other bad parameter."""
    if isinstance(err, NotFound):
        return 404
    if isinstance(err, Ambiguous):
        return 409
    if isinstance(err, Unavailable):
        return 503
    return 422


def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def json_bytes(body: Any) -> bytes:
    """``body`` as strict JSON (no NaN; decimals, timestamps and BLOBs as numbers or text)."""
    return json.dumps(json_safe(body), default=str, allow_nan=False).encode()


def table(data: list[dict], request: Request, fmt: str | None, limit: int, offset: int,
          total: int | None = None) -> Response:
    """Rows as a JSON page (``total``, ``offset``, ``limit``, ``rows``), CSV or Parquet: the
    ``format`` parameter, else CSV when the client accepts ``text/csv``, else JSON."""
    fmt = fmt or ("csv" if "text/csv" in request.headers.get("accept", "") else "json")
    if fmt not in FORMATS:
        raise AtlasError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if fmt == "json":
        body = {"total": len(data) if total is None else total, "offset": offset,
                "limit": limit, "rows": data}
        return Response(json_bytes(body), media_type="application/json")
    import pyarrow as pa

    arrow = pa.Table.from_pylist([{k: plain(v) for k, v in r.items()} for r in data])
    if fmt == "csv":
        return Response(write_table(arrow, "csv", None), media_type="text/csv")
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(arrow, buf)
    return Response(buf.getvalue(), media_type="application/vnd.apache.parquet")


def whole(data: list[dict], request: Request, fmt: str | None) -> Response:
    """All of ``data`` as one page."""
    return table(data, request, fmt, len(data), 0)


def paged(eng: Any, listing: Listing, request: Request, fmt: str | None, limit: int,
          offset: int) -> Response:
    """One page of a listing's rows, with the total count."""
    sql, params = listing.sql, listing.params
    total = rows(eng, f"SELECT count(*) AS n FROM ({sql})", **params)[0]["n"]
    data = rows(eng, f"{sql} LIMIT {int(limit)} OFFSET {int(offset)}", **params)
    return table(data, request, fmt, limit, offset, total)


def plain(value: Any) -> Any:
    """JSON/CSV-friendly values (decimals, timestamps, BLOBs and nested values as text or
    numbers)."""
    if isinstance(value, (dict, list)):
        return json.dumps(json_safe(value), default=json_value, allow_nan=False)
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return json_value(value)
