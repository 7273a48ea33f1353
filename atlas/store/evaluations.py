"""Reads and writes of ``evaluations``: one stored accuracy per (model, set or none, factor,
control and its seed, evaluated task, metric, evaluation params)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from sqlalchemy import and_, insert, select
from sqlalchemy.engine import Connection

from atlas.store.repository import insert_arrow
from atlas.store.schema import evaluations as table


@dataclass(frozen=True)
class EvaluationKey:
    model_id: int
    eval_task_id: int
    set_id: int | None  # None: the unmodified model
    factor: float
    is_control: bool
    control_seed: int | None  # set for controls only
    metric: str
    params_key: str


def find(conn: Connection, key: EvaluationKey) -> tuple[float, int] | None:
    """The stored (value, n) of ``key``, if any."""
    row = conn.execute(select(table.c.value, table.c.n).where(and_(
        table.c.model_id == key.model_id,
        table.c.eval_task_id == key.eval_task_id,
        table.c.set_id.is_(None) if key.set_id is None else table.c.set_id == key.set_id,
        table.c.factor == key.factor,
        table.c.is_control == key.is_control,
        table.c.control_seed.is_(None) if key.control_seed is None
        else table.c.control_seed == key.control_seed,
        table.c.metric == key.metric,
        table.c.params_key == key.params_key,
    )).limit(1)).first()
    return (row.value, row.n) if row else None


def add(conn: Connection, key: EvaluationKey, value: float, n: int, seed: int, params: dict,
        examples: list | None = None) -> int:
    """Store an evaluation and its per-example outcomes (objects with ``instance_id``, ``gold``,
    ``predicted``, ``correct``, ``gold_logprob``, ``gold_prob``) in one transaction."""
    eval_id = int(conn.execute(insert(table).values(
        model_id=key.model_id, set_id=key.set_id, factor=key.factor, is_control=key.is_control,
        control_seed=key.control_seed, eval_task_id=key.eval_task_id, metric=key.metric,
        value=value, n=n, seed=seed, params=params, params_key=key.params_key,
    ).returning(table.c.eval_id)).scalar_one())
    if examples:
        insert_arrow(conn, "evaluation_examples", pa.table({
            "eval_id": pa.array([eval_id] * len(examples), pa.int32()),
            "example": pa.array(range(len(examples)), pa.int32()),
            "instance_id": pa.array([e.instance_id for e in examples], pa.string()),
            "gold": pa.array([e.gold for e in examples], pa.string()),
            "predicted": pa.array([e.predicted for e in examples], pa.string()),
            "gold_logprob": pa.array([e.gold_logprob for e in examples], pa.float64()),
            "gold_prob": pa.array([e.gold_prob for e in examples], pa.float64()),
            "correct": pa.array([bool(e.correct) for e in examples], pa.bool_()),
        }))
    return eval_id
