"""``POST /sql``: one read-only statement on the request's own sandboxed connection."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from atlas.query.sql import run_sql_on
from atlas.serve.contract import ERRORS, TABLE_MEDIA, Format, SqlAnswer, SqlQuery
from atlas.serve.responses import Fmt, chosen, json_bytes, plain, tabular
from atlas.serve.state import AtlasState, state

router = APIRouter(tags=["sql"])


@router.post("/sql", responses={200: {"model": SqlAnswer, "content": TABLE_MEDIA,
                                      "description": "The rows (format=json), or CSV or "
                                                     "Parquet."}, **ERRORS})
def sql(body: SqlQuery, request: Request, fmt: Format | None = Fmt,
        st: AtlasState = Depends(state)):
    """One read-only statement over the documented tables and views, within the server's time
    and row limits."""
    with st.request() as eng:
        result = run_sql_on(eng.conn.connection.driver_connection, body.sql,
                            timeout_s=st.sql_timeout_s, max_rows=st.sql_max_rows)
    kind = chosen(fmt, request)
    if kind != Format.json:
        return tabular(result, kind)
    truncated = (result.schema.metadata or {}).get(b"truncated") == b"true"
    data = [{k: plain(v) for k, v in r.items()} for r in result.to_pylist()]
    return Response(json_bytes({"columns": result.column_names, "rows": data,
                                "truncated": truncated}), media_type="application/json")
