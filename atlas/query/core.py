"""Small helpers shared by the queries: rows as dicts, a model's methods; model and task lookup
(:mod:`atlas.store.identity`, re-exported)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from atlas.errors import NotFound
from atlas.store.arrays import _duck
from atlas.store.identity import resolve_model, resolve_task

__all__ = ["check_method", "resolve_model", "resolve_task", "rows", "set_methods"]


def rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execute(text(sql), params)
        return [dict(r._mapping) for r in result]


def fetch(engine: Engine, sql: str, *params: Any) -> list[tuple]:
    """A query's rows as tuples, run on the DuckDB connection itself with positional
    parameters (``?``): for small lookups, a few milliseconds less than :func:`rows`."""
    with engine.connect() as conn:
        return _duck(conn).execute(sql, list(params)).fetchall()


def set_methods(engine: Engine, model: dict) -> list[str]:
    """The methods ``model`` has current sets of, sorted."""
    return [r["method"] for r in rows(
        engine, "SELECT DISTINCT method FROM task_sets WHERE model_id = :m ORDER BY 1",
        m=model["model_id"])]


def check_method(engine: Engine, model: dict, method: str) -> None:
    have = set_methods(engine, model)
    if method not in have:
        raise NotFound(f"model '{model['name']}' has no '{method}' sets; it has: "
                         f"{', '.join(have) or 'none'} (run atlas ingest --method {method})")
