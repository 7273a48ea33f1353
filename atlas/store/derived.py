"""Sets derived from stored sets: each task's set split into the part it shares with most of the
model's other tasks and the part specific to it. Both are stored as sets of their own (methods
``METHOD-shared`` and ``METHOD-specific``), so ablation, reports and SQL treat them as any set."""

from __future__ import annotations

import numpy as np
import torch
from sqlalchemy import text
from sqlalchemy.engine import Connection

from atlas.errors import AtlasError
from atlas.naming import short_task_id
from atlas.store import arrays
from atlas.store import repository as repo

PARTS = ("shared", "specific")


def split_shared(conn: Connection, model_id: int, method: str, min_sets: int | None = None
                 ) -> list[dict]:
    """Split the current set of every task of (model, method): its neurons that are in at least
    ``min_sets`` of these sets (default: more than half of them) and the rest. Returns one row per
    stored part: set, task, rule, size, status ("created" or "exists")."""
    if method.endswith(tuple(f"-{p}" for p in PARTS)):
        raise AtlasError(f"'{method}' sets are already a split; split the sets they came from")
    model = conn.execute(text("SELECT name, n_layers, d_mlp FROM models WHERE model_id = :m"),
                         {"m": model_id}).one()
    sources = conn.execute(text(
        "SELECT set_id, task_id, task, run_id FROM task_sets WHERE model_id = :m AND method = :method "
        "AND task_id IS NOT NULL ORDER BY task"), {"m": model_id, "method": method}).all()
    n_sets = len(sources)
    if n_sets < 2:
        raise AtlasError(f"the split needs at least two '{method}' sets of model '{model.name}' "
                         f"(found {n_sets}); ingest more tasks first")
    min_sets = n_sets // 2 + 1 if min_sets is None else min_sets
    if not 1 <= min_sets <= n_sets:
        raise AtlasError(f"--shared-in {min_sets} is out of range: model '{model.name}' has "
                         f"{n_sets} '{method}' sets; use 1 to {n_sets}")
    masks = {s.set_id: arrays.read_set_mask(conn, s.set_id, model.n_layers, model.d_mlp)
             for s in sources}  # each [n_layers, d_mlp]
    in_sets = np.sum(list(masks.values()), axis=0)  # [n_layers, d_mlp]: sets holding the neuron
    shared = in_sets >= min_sets
    selection_rule = f"shared-in:{min_sets}/{n_sets}"
    out = []
    for s in sources:
        for part, mask in zip(PARTS, (masks[s.set_id] & shared, masks[s.set_id] & ~shared)):
            name, status = _store(conn, model, model_id, s, f"{method}-{part}", selection_rule, mask)
            out.append({"set": name, "task": s.task, "rule": selection_rule, "size": int(mask.sum()),
                        "status": status})
    return out


def _store(conn: Connection, model, model_id: int, source, method: str, selection_rule: str,
           mask: np.ndarray) -> tuple[str, str]:
    """Store ``mask`` as the current (model, task, method) set unless that set already has these
    members under this rule; never replaces a stored set (evaluations refer to it)."""
    current = conn.execute(text(
        "SELECT set_id, name, rule FROM task_sets WHERE model_id = :m AND task_id = :t AND "
        "method = :method"), {"m": model_id, "t": source.task_id, "method": method}).first()
    if current is not None and current.rule == selection_rule and np.array_equal(
            arrays.read_set_mask(conn, current.set_id, model.n_layers, model.d_mlp), mask):
        return current.name, "exists"
    base = f"{model.name}/{short_task_id(source.task)}/{method}@{selection_rule}"
    name, k = base, 1
    while conn.execute(text("SELECT 1 FROM neuron_sets WHERE name = :n"), {"n": name}).first():
        k += 1
        name = f"{base}#{k}"
    repo.write_set(conn, name, model_id, source.task_id, source.run_id, selection_rule,
                   torch.from_numpy(mask), method)
    return name, "created"
