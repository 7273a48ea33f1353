"""Small helpers shared by the queries: rows as dicts, model lookup."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from atlas.errors import AtlasError


def rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execute(text(sql), params)
        return [dict(r._mapping) for r in result]


def resolve_model(engine: Engine, name: str) -> dict[str, Any]:
    """The newest stored model called ``name`` (model_id, name, n_layers, d_mlp ...)."""
    found = rows(engine, "SELECT * FROM models WHERE name = :n ORDER BY model_id DESC LIMIT 1", n=name)
    if not found:
        known = [r["name"] for r in rows(engine, "SELECT DISTINCT name FROM models ORDER BY 1")]
        raise AtlasError(f"no model '{name}' in the atlas; known: {', '.join(known) or 'none'}")
    return found[0]


def check_method(engine: Engine, model: dict, method: str) -> None:
    have = [r["method"] for r in rows(
        engine, "SELECT DISTINCT method FROM task_sets WHERE model_id = :m ORDER BY 1",
        m=model["model_id"])]
    if method not in have:
        raise AtlasError(f"model '{model['name']}' has no '{method}' sets; it has: "
                         f"{', '.join(have) or 'none'} (run atlas ingest --method {method})")
