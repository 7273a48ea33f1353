"""How the server writes answers: tables as JSON pages, CSV (a header even when empty) or
Parquet (the database's types); everything else as JSON; errors as one JSON shape."""

from __future__ import annotations

import io
import json
import typing
from collections.abc import Callable
from typing import Any

import pyarrow as pa
from fastapi import Query, Request
from fastapi.responses import JSONResponse, Response

from atlas.errors import Ambiguous, AtlasError, Busy, NotFound, Unavailable
from atlas.query.catalog import Listing
from atlas.query.core import rows
from atlas.query.sql import json_safe, json_value, write_table
from atlas.serve.contract import Format

MAX_PAGE = 10_000
MEDIA = {Format.json: "application/json", Format.csv: "text/csv",
         Format.parquet: "application/vnd.apache.parquet"}

Limit = Query(100, ge=1, le=MAX_PAGE, description="Rows per page.")
Offset = Query(0, ge=0, description="Rows to skip.")
Fmt = Query(None, alias="format", description="json (a page), csv or parquet; default: the "
                                              "Accept header's choice, else json.")


def status_of(err: AtlasError) -> int:
    """The HTTP status of an atlas error: 404 unknown (or not enabled on this server), 409
    ambiguous, 429 busy, 503 database unavailable, 422 any other bad parameter."""
    if isinstance(err, Busy):
        return 429
    if isinstance(err, NotFound):
        return 404
    if isinstance(err, Ambiguous):
        return 409
    if isinstance(err, Unavailable):
        return 503
    return 422


def error(message: str, status: int, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def json_bytes(body: Any) -> bytes:
    """``body`` as strict JSON (no NaN; decimals, timestamps and BLOBs as numbers or text)."""
    return json.dumps(json_safe(body), default=str, allow_nan=False).encode()


def chosen(fmt: Format | None, request: Request) -> Format:
    """The format asked for: the ``format`` parameter, else the Accept header's, else JSON."""
    if fmt is not None:
        return fmt
    accept = request.headers.get("accept", "")
    for candidate in (Format.csv, Format.parquet):
        if MEDIA[candidate] in accept:
            return candidate
    return Format.json


def table(data: list[dict], request: Request, fmt: Format | None, limit: int, offset: int,
          total: int | None = None, *, row: type | None = None) -> Response:
    """Rows as a JSON page (``total``, ``offset``, ``limit``, ``rows``), CSV or Parquet, with
    ``row``'s fields as the columns of an empty answer."""
    fmt = chosen(fmt, request)
    if fmt == Format.json:
        body = {"total": len(data) if total is None else total, "offset": offset,
                "limit": limit, "rows": data}
        return Response(json_bytes(body), media_type=MEDIA[fmt])
    arrow = (pa.Table.from_pylist([{k: plain(v) for k, v in r.items()} for r in data])
             if data or row is None else empty_table(row))
    return tabular(arrow, fmt)


def tabular(arrow: pa.Table, fmt: Format) -> Response:
    """An Arrow table as CSV or Parquet."""
    if fmt == Format.csv:
        return Response(write_table(arrow, "csv", None), media_type=MEDIA[fmt])
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(arrow, buf)
    return Response(buf.getvalue(), media_type=MEDIA[fmt])


def cached(st: Any, eng: Any, request: Request, fmt: Format | None,
           make: Callable[[], Response]) -> Response:
    """The answer ``make()`` gives, made once per atlas state for this path, these parameters
    and this format (answers never change while the atlas does not)."""
    key = (request.url.path, tuple(sorted(request.query_params.multi_items())),
           chosen(fmt, request))

    def encoded() -> tuple[bytes, str]:
        response = make()
        return bytes(response.body), response.media_type or MEDIA[Format.json]
    body, media = st.answer(key, st.stamp(eng), encoded)
    return Response(body, media_type=media)


def whole(data: list[dict], request: Request, fmt: Format | None, row: type) -> Response:
    """All of ``data`` as one page."""
    return table(data, request, fmt, len(data), 0, row=row)


def paged(eng: Any, listing: Listing, request: Request, fmt: Format | None, limit: int,
          offset: int) -> Response:
    """One page of a listing's rows, with the total count; CSV and Parquet straight from the
    database's Arrow answer."""
    if chosen(fmt, request) != Format.json:
        return tabular(listing.arrow(eng.conn, limit, offset), chosen(fmt, request))
    sql, params = listing.sql, listing.params
    total = rows(eng, f"SELECT count(*) AS n FROM ({sql})", **params)[0]["n"]
    page = f"{sql} LIMIT {int(limit)} OFFSET {int(offset)}"
    return table(rows(eng, page, **params), request, fmt, limit, offset, total)


ARROW_TYPES = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}


def empty_table(row: type) -> pa.Table:
    """An empty table with ``row``'s fields as columns (their types where plain)."""
    hints = typing.get_type_hints(row)
    columns = {}
    for name in row.model_fields:
        kinds = [k for k in typing.get_args(hints[name]) or (hints[name],) if k is not type(None)]
        columns[name] = pa.array([], ARROW_TYPES.get(kinds[0], pa.string()) if kinds else
                                 pa.string())
    return pa.table(columns)


def plain(value: Any) -> Any:
    """JSON/CSV-friendly values (decimals, timestamps, BLOBs and nested values as text or
    numbers)."""
    if isinstance(value, (dict, list)):
        return json.dumps(json_safe(value), default=json_value, allow_nan=False)
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    return json_value(value)
