"""Small helpers shared by the queries: rows as dicts, model and task lookup by id."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from atlas.errors import AtlasError
from atlas.store import identity


def rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execute(text(sql), params)
        return [dict(r._mapping) for r in result]


def resolve_model(engine: Engine, spec: str) -> dict[str, Any]:
    """The one stored model ``spec`` names (NAME, NAME@DTYPE, NAME@REVISION or #ID); an
    ambiguous name is an error listing the candidates."""
    with engine.connect() as conn:
        return identity.resolve_model(conn, spec)


def resolve_task(engine: Engine, spec: str) -> dict[str, Any]:
    """The one stored task ``spec`` names (full name, unique SNI id or #ID)."""
    with engine.connect() as conn:
        return identity.resolve_task(conn, spec)


def set_methods(engine: Engine, model: dict) -> list[str]:
    """The methods ``model`` has current sets of, sorted."""
    return [r["method"] for r in rows(
        engine, "SELECT DISTINCT method FROM task_sets WHERE model_id = :m ORDER BY 1",
        m=model["model_id"])]


def check_method(engine: Engine, model: dict, method: str) -> None:
    have = set_methods(engine, model)
    if method not in have:
        raise AtlasError(f"model '{model['name']}' has no '{method}' sets; it has: "
                         f"{', '.join(have) or 'none'} (run atlas ingest --method {method})")
