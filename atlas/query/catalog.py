"""What the atlas holds, as listings: models, tasks, runs, sets, members and evaluations, each
filtered by the one identity rule (a model, task or method by id or unambiguous name).

A listing is a statement and its parameters; the server pages it, the Python API reads it whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from atlas.errors import NotFound
from atlas.query.core import resolve_model, resolve_task, rows


@dataclass(frozen=True)
class Listing:
    """One read-only statement with named parameters (``:name``), ordered."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)


def filters(engine: Engine, model: str | None = None, task: str | None = None,
            method: str | None = None, *, model_col: str = "model_id",
            task_col: str = "task_id") -> tuple[str, dict[str, Any]]:
    """A WHERE clause keeping the rows of ``model``, ``task`` and ``method`` (each optional;
    model and task resolved to their ids) and its parameters."""
    where, params = ["TRUE"], {}
    if model:
        where.append(f"{model_col} = :mid")
        params["mid"] = resolve_model(engine, model)["model_id"]
    if task:
        where.append(f"{task_col} = :tid")
        params["tid"] = resolve_task(engine, task)["task_id"]
    if method:
        where.append("method = :method")
        params["method"] = method
    return " AND ".join(where), params


def models() -> Listing:
    return Listing("SELECT * FROM models ORDER BY model_id")


def tasks() -> Listing:
    return Listing("SELECT * FROM tasks ORDER BY task_id")


def runs(engine: Engine, model: str | None = None, task: str | None = None,
         method: str | None = None) -> Listing:
    where, params = filters(engine, model, task, method)
    return Listing(f"SELECT * FROM runs WHERE {where} ORDER BY run_id", params)


def sets(engine: Engine, model: str | None = None, task: str | None = None,
         method: str | None = None) -> Listing:
    where, params = filters(engine, model, task, method)
    return Listing(f"SELECT * FROM set_sizes WHERE {where} ORDER BY set_id", params)


def members(engine: Engine, set_id: int) -> Listing:
    """A stored set's neurons by (layer, neuron); an unknown set id is a NotFound."""
    if not rows(engine, "SELECT 1 FROM neuron_sets WHERE set_id = :s", s=set_id):
        raise NotFound(f"no set #{set_id} in the atlas")
    return Listing("SELECT layer, neuron FROM neuron_set_members WHERE set_id = :s "
                   "ORDER BY layer, neuron", {"s": set_id})


def evaluations(engine: Engine, model: str | None = None, task: str | None = None,
                method: str | None = None) -> Listing:
    where, params = filters(engine, model, task, method, task_col="eval_task_id")
    return Listing(f"SELECT * FROM evaluation_effects WHERE {where} ORDER BY eval_id", params)
