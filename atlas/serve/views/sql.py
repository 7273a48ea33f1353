"""``POST /sql``: one read-only statement on the request's own sandboxed connection."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends
from fastapi.responses import Response

from atlas.errors import AtlasError
from atlas.query.sql import run_sql_on
from atlas.serve.responses import json_bytes, plain
from atlas.serve.state import AtlasState, state

router = APIRouter()


@router.post("/sql")
def sql(body: dict = Body(..., examples=[{"sql": "SELECT * FROM set_overlaps LIMIT 5"}]),
        st: AtlasState = Depends(state)):
    statement = body.get("sql")
    if not isinstance(statement, str) or not statement.strip():
        raise AtlasError('give the query as {"sql": "SELECT ..."}')
    with st.request() as eng:
        result = run_sql_on(eng.conn.connection.driver_connection, statement,
                            timeout_s=st.sql_timeout_s, max_rows=st.sql_max_rows)
    truncated = (result.schema.metadata or {}).get(b"truncated") == b"true"
    data = [{k: plain(v) for k, v in r.items()} for r in result.to_pylist()]
    return Response(json_bytes({"columns": result.column_names, "rows": data,
                                "truncated": truncated}), media_type="application/json")
