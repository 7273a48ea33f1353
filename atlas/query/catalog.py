"""What the atlas holds, as listings: models, tasks, runs, sets, members and evaluations, each
filtered by the one identity rule (a model, task or method by id or unambiguous name).

A listing is a statement and its parameters; the server pages it, the Python API reads it whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from sqlalchemy.engine import Connection, Engine

from atlas.errors import NotFound
from atlas.query.core import resolve_model, resolve_task, rows
from atlas.store.arrays import _duck
from atlas.store.identity import task_labels


@dataclass(frozen=True)
class Listing:
    """One read-only statement with named parameters (``:name``), ordered."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)

    def arrow(self, conn: Connection, limit: int | None = None, offset: int = 0) -> pa.Table:
        """The rows (one page of them with ``limit``) as Arrow through DuckDB's own connection
        under ``conn``, so that the stored types are kept."""
        sql = self.sql if limit is None else f"{self.sql} LIMIT {int(limit)} OFFSET {int(offset)}"
        native = re.sub(r"(?<![:\w]):([A-Za-z_]\w*)", r"$\1", sql)  # DuckDB's named parameters
        return _duck(conn).sql(native, params=self.params).to_arrow_table()


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


def overview(engine: Engine) -> list[dict[str, Any]]:
    """Models × methods with their runs' status and task counts; imported sets (no run) as rows
    of zero runs."""
    return rows(engine, """
        SELECT m.name AS model, m.dtype, r.method, count(*) AS runs,
               count(*) FILTER (WHERE r.status = 'complete') AS complete,
               count(*) FILTER (WHERE r.status = 'running') AS running,
               count(*) FILTER (WHERE r.status = 'failed') AS failed,
               count(DISTINCT r.task_id) AS tasks
        FROM runs r JOIN models m USING (model_id) GROUP BY ALL ORDER BY ALL""") + rows(engine, """
        SELECT model, dtype, method, 0 AS runs, 0 AS complete, 0 AS running, 0 AS failed,
               count(*) AS tasks
        FROM task_sets WHERE run_id IS NULL GROUP BY ALL ORDER BY ALL""")


def layer_profile(engine: Engine, model: str, method: str = "cgvst") -> list[dict[str, Any]]:
    """Per current set of ``model``'s ``method`` and layer: neurons, relative depth, share of the
    set and the task's short label."""
    data = rows(engine, "SELECT task, layer, n, rel_depth, fraction FROM layer_counts "
                        "WHERE model_id = :mid AND method = :method ORDER BY task, layer",
                mid=resolve_model(engine, model)["model_id"], method=method)
    names = sorted({r["task"] for r in data})
    labels = dict(zip(names, task_labels(names)))
    for r in data:
        r["task_label"] = labels[r["task"]]
    return data


def set_versions(engine: Engine, model_id: int, method: str) -> tuple[tuple[int, str], ...]:
    """The (id, creation time) of each current set of a model's method: sets never change in
    place (a new set gets a new id; the time tells a replaced file's sets apart), so this keys
    anything computed from them."""
    return tuple((r["set_id"], str(r["created_at"])) for r in rows(
        engine, "SELECT t.set_id, s.created_at FROM task_sets t JOIN neuron_sets s USING (set_id) "
                "WHERE t.model_id = :mid AND t.method = :method ORDER BY set_id",
        mid=model_id, method=method))
