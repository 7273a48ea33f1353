"""Reads and writes of the atlas tables. Scores go in bulk through DuckDB's Arrow path."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from sqlalchemy import text
from sqlalchemy.engine import Connection

from atlas.errors import AtlasError
from atlas.naming import short_task_id
from atlas.store import arrays

Selector = Callable[[torch.Tensor, str], torch.Tensor]  # (scores, selection_rule) -> bool mask
_duck = arrays._duck


def insert_arrow(conn: Connection, table: str, data: pa.Table) -> None:
    duck = _duck(conn)
    view = f"_atlas_{table}_arrow"
    duck.register(view, data)
    try:
        conn.exec_driver_sql(f"INSERT INTO {table} SELECT * FROM {view}")
    finally:
        duck.unregister(view)


def scores_table(run_id: int, scores: torch.Tensor) -> pa.Table:
    """[n_layers, d_mlp] scores as (run_id, layer, neuron, score) columns."""
    n_layers, d_mlp = scores.shape
    n = n_layers * d_mlp
    return pa.table(
        {
            "run_id": pa.array(np.full(n, run_id, dtype=np.int32)),
            "layer": pa.array(np.repeat(np.arange(n_layers, dtype=np.int16), d_mlp)),
            "neuron": pa.array(np.tile(np.arange(d_mlp, dtype=np.int32), n_layers)),
            "score": pa.array(scores.numpy().astype(np.float32).ravel()),
        }
    )


def write_scores(conn: Connection, run_id: int, scores: torch.Tensor) -> None:
    insert_arrow(conn, "neuron_scores", scores_table(run_id, scores))


def read_scores(conn: Connection, run_id: int, n_layers: int, d_mlp: int) -> torch.Tensor:
    """A run's scores as a float32 tensor [n_layers, d_mlp]."""
    return torch.from_numpy(arrays.read_scores(conn, run_id, n_layers, d_mlp))


def ensure_model(conn: Connection, name: str, family: str | None, n_layers: int, d_mlp: int,
                 revision: str, dtype: str) -> int:
    row = conn.execute(
        text("SELECT model_id, n_layers, d_mlp FROM models "
             "WHERE name = :name AND revision = :revision AND dtype = :dtype"),
        {"name": name, "revision": revision, "dtype": dtype},
    ).first()
    if row:
        if (row.n_layers, row.d_mlp) != (n_layers, d_mlp):
            raise AtlasError(
                f"model '{name}' is stored with shape {row.n_layers}×{row.d_mlp}, "
                f"not {n_layers}×{d_mlp}; use another --model name"
            )
        return int(row.model_id)
    return int(conn.execute(
        text("INSERT INTO models (name, family, n_layers, d_mlp, revision, dtype) "
             "VALUES (:name, :family, :n_layers, :d_mlp, :revision, :dtype) RETURNING model_id"),
        {"name": name, "family": family, "n_layers": n_layers, "d_mlp": d_mlp,
         "revision": revision, "dtype": dtype},
    ).scalar_one())


IMPORTED = "imported"  # the data hash of a task known only from imported sets


def ensure_task(conn: Connection, name: str, source: str, n_instances: int, data_hash: str,
                also: tuple[str, ...] = ()) -> int:
    """The task called ``name`` (a task is its full name), created if new. A task known only
    from imported sets takes the data's description; a stored task whose data hash is neither
    ``data_hash`` nor one of ``also`` (the same file read by other rules) is refused: its file
    changed since the atlas stored it."""
    row = conn.execute(
        text("SELECT task_id, data_hash FROM tasks WHERE name = :name ORDER BY task_id LIMIT 1"),
        {"name": name},
    ).first()
    if row is None:
        return int(conn.execute(
            text("INSERT INTO tasks (name, source, n_instances, data_hash) "
                 "VALUES (:name, :source, :n, :hash) RETURNING task_id"),
            {"name": name, "source": source, "n": n_instances, "hash": data_hash},
        ).scalar_one())
    if data_hash != IMPORTED and row.data_hash == IMPORTED:
        conn.execute(text("UPDATE tasks SET source = :source, n_instances = :n, data_hash = :hash "
                          "WHERE task_id = :t"),
                     {"source": source, "n": n_instances, "hash": data_hash, "t": row.task_id})
    elif data_hash != IMPORTED and row.data_hash not in (data_hash, *also):
        raise AtlasError(
            f"task '{name}' changed since the atlas stored it: {source} holds data {data_hash}, "
            f"the atlas data {row.data_hash}; put the original file back, or store the changed "
            "data under a new task name (rename the file) or in another atlas (--db)")
    return int(row.task_id)


@dataclass
class RunRow:
    run_id: int
    status: str
    n_examples: int
    n_tokens: int
    n_skipped: int | None = None


def find_run(conn: Connection, model_id: int, task_id: int, method: str, key: str,
             status: tuple[str, ...]) -> RunRow | None:
    row = conn.execute(
        text("SELECT run_id, status, n_examples, n_tokens, n_skipped FROM runs WHERE model_id = :m "
             "AND task_id = :t AND method = :method AND params_key = :key "
             "AND list_contains(:status, status) ORDER BY run_id DESC LIMIT 1"),
        {"m": model_id, "t": task_id, "method": method, "key": key, "status": list(status)},
    ).first()
    return RunRow(row.run_id, row.status, row.n_examples, row.n_tokens, row.n_skipped) if row else None


def start_run(conn: Connection, model_id: int, task_id: int, method: str,
              params: dict[str, Any], key: str) -> int:
    return int(conn.execute(
        text("INSERT INTO runs (model_id, task_id, method, status, params, params_key) "
             "VALUES (:m, :t, :method, 'running', :params, :key) RETURNING run_id"),
        {"m": model_id, "t": task_id, "method": method, "params": json.dumps(params), "key": key},
    ).scalar_one())


@dataclass
class Checkpoint:
    chunk_size: int
    n_done: int
    n_tokens: int
    sums: torch.Tensor


def load_checkpoint(conn: Connection, run_id: int, shape: tuple[int, int]) -> Checkpoint | None:
    row = conn.execute(
        text("SELECT chunk_size, n_done, n_tokens, sums FROM run_checkpoints WHERE run_id = :r"),
        {"r": run_id},
    ).first()
    if row is None:
        return None
    sums = torch.from_numpy(np.frombuffer(row.sums, dtype=np.float32).copy().reshape(shape))
    return Checkpoint(row.chunk_size, row.n_done, row.n_tokens, sums)


def save_checkpoint(conn: Connection, run_id: int, ckpt: Checkpoint) -> None:
    conn.execute(text("DELETE FROM run_checkpoints WHERE run_id = :r"), {"r": run_id})
    conn.execute(
        text("INSERT INTO run_checkpoints (run_id, chunk_size, n_done, n_tokens, sums) "
             "VALUES (:r, :c, :n, :t, :s)"),
        {"r": run_id, "c": ckpt.chunk_size, "n": ckpt.n_done, "t": ckpt.n_tokens,
         "s": ckpt.sums.numpy().astype(np.float32).tobytes()},
    )


def n_evaluations(conn: Connection, set_ids: list[int]) -> int:
    """How many stored evaluations refer to these sets."""
    if not set_ids:
        return 0
    return int(conn.execute(text("SELECT count(*) FROM evaluations WHERE list_contains(:s, set_id)"),
                            {"s": list(set_ids)}).scalar_one())


def refuse_orphaning(conn: Connection, set_ids: list[int], what: str) -> None:
    """Replacing sets that evaluations refer to would leave those evaluations pointing nowhere."""
    n = n_evaluations(conn, set_ids)
    if n:
        names = [r.name for r in conn.execute(
            text("SELECT name FROM neuron_sets WHERE list_contains(:s, set_id) ORDER BY set_id"),
            {"s": list(set_ids)})]
        raise AtlasError(f"{what} would replace set(s) {', '.join(names)}, which {n} stored "
                         "evaluation(s) refer to; nothing was changed (pass --drop-evaluations "
                         "to delete them with the set, or store the new set under another name)")


def delete_evaluations(conn: Connection, set_ids: list[int]) -> None:
    for set_id in set_ids:
        conn.execute(text("DELETE FROM evaluation_examples WHERE eval_id IN (SELECT eval_id FROM "
                          "evaluations WHERE set_id = :s)"), {"s": set_id})
        conn.execute(text("DELETE FROM evaluations WHERE set_id = :s"), {"s": set_id})


def write_set(conn: Connection, name: str, model_id: int, task_id: int | None,
              run_id: int | None, selection_rule: str, mask: torch.Tensor, method: str,
              drop_evaluations: bool = False) -> int:
    """Store a neuron set (bool mask [n_layers, d_mlp]); replaces a set of the same name, which
    is refused while evaluations refer to it unless ``drop_evaluations`` deletes them too."""
    old = conn.execute(text("SELECT set_id FROM neuron_sets WHERE name = :n"), {"n": name}).first()
    if old:
        if drop_evaluations:
            delete_evaluations(conn, [old.set_id])
        refuse_orphaning(conn, [old.set_id], f"storing set '{name}'")
        delete_sets(conn, [old.set_id])
    set_id = int(conn.execute(
        text("INSERT INTO neuron_sets (name, model_id, task_id, run_id, rule, size, method) "
             "VALUES (:name, :m, :t, :r, :rule, :size, :method) RETURNING set_id"),
        {"name": name, "m": model_id, "t": task_id, "r": run_id, "rule": selection_rule,
         "size": int(mask.sum()), "method": method},
    ).scalar_one())
    layers, neurons = np.nonzero(mask.numpy())
    insert_arrow(conn, "neuron_set_members", pa.table({
        "set_id": pa.array(np.full(len(layers), set_id, dtype=np.int32)),
        "layer": pa.array(layers.astype(np.int16)),
        "neuron": pa.array(neurons.astype(np.int32)),
    }))
    return set_id


def set_name(conn: Connection, model: str, task: str, method: str, run_id: int,
             selection_rule: str | None = None) -> str:
    """``model/task id/method`` (``@selection_rule`` for a set beyond the run's first); runs with other
    params get ``#run_id`` when the name is taken."""
    base = f"{model}/{short_task_id(task)}/{method}" + (f"@{selection_rule}" if selection_rule else "")
    taken = conn.execute(text("SELECT 1 FROM neuron_sets WHERE name = :n"), {"n": base}).first()
    return f"{base}#{run_id}" if taken else base


def set_from_run(conn: Connection, run_id: int, selection_rule: str, select: Selector
                 ) -> tuple[str, int, bool]:
    """The set of complete run ``run_id`` under ``selection_rule``, made from its stored scores (no
    recomputation) by ``select(scores, selection_rule)`` when it does not exist yet: (name, size,
    created). (The selection comes from the caller: the store knows no scoring.)"""
    found = conn.execute(text("SELECT name, size FROM neuron_sets WHERE run_id = :r AND rule = :rule"),
                         {"r": run_id, "rule": selection_rule}).first()
    if found:
        return found.name, int(found.size), False
    run = conn.execute(text(
        "SELECT r.model_id, r.task_id, r.method, r.status, m.name AS model, m.n_layers, m.d_mlp, "
        "t.name AS task FROM runs r JOIN models m USING (model_id) JOIN tasks t USING (task_id) "
        "WHERE r.run_id = :r"), {"r": run_id}).first()
    if run is None or run.status != "complete":
        raise AtlasError(f"run {run_id} is not a complete run; sets are made from complete runs")
    mask = select(read_scores(conn, run_id, run.n_layers, run.d_mlp), selection_rule)
    name = set_name(conn, run.model, run.task, run.method, run_id, selection_rule)
    write_set(conn, name, run.model_id, run.task_id, run_id, selection_rule, mask, run.method)
    return name, int(mask.sum()), True


def delete_sets(conn: Connection, set_ids: list[int]) -> None:
    for set_id in set_ids:
        conn.execute(text("DELETE FROM neuron_set_members WHERE set_id = :s"), {"s": set_id})
        conn.execute(text("DELETE FROM neuron_sets WHERE set_id = :s"), {"s": set_id})


def run_sets(conn: Connection, run_id: int) -> list[int]:
    return [r.set_id for r in conn.execute(
        text("SELECT set_id FROM neuron_sets WHERE run_id = :r"), {"r": run_id})]


def delete_run(conn: Connection, run_id: int, drop_evaluations: bool = False) -> None:
    """Remove a run with its scores, checkpoint and the sets selected from it; refused while
    evaluations refer to those sets, unless ``drop_evaluations`` deletes them too."""
    sets = run_sets(conn, run_id)
    if drop_evaluations:
        delete_evaluations(conn, sets)
    refuse_orphaning(conn, sets, f"replacing run {run_id}")
    delete_sets(conn, sets)
    for table in ("neuron_scores", "run_checkpoints", "runs"):
        conn.execute(text(f"DELETE FROM {table} WHERE run_id = :r"), {"r": run_id})


def complete_run(conn: Connection, run_id: int, *, n_examples: int, n_tokens: int,
                 n_skipped: int) -> None:
    conn.execute(text("DELETE FROM run_checkpoints WHERE run_id = :r"), {"r": run_id})
    conn.execute(
        text("UPDATE runs SET status = 'complete', n_examples = :e, n_tokens = :t, "
             "n_skipped = :s, finished_at = current_timestamp, error = NULL WHERE run_id = :r"),
        {"r": run_id, "e": n_examples, "t": n_tokens, "s": n_skipped},
    )


def fail_run(conn: Connection, run_id: int, error: str) -> None:
    conn.execute(
        text("UPDATE runs SET status = 'failed', error = :e WHERE run_id = :r"),
        {"r": run_id, "e": error[:500]},
    )
