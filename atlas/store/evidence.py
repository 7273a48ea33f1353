"""Writes of neuron evidence: an evidence run's rows appear, with the run marked complete, in
one transaction (a run is visible only when complete; a run killed before it leaves at most a
``running`` row, cleared by the next run of the same params); logit effects and the vocabulary
once per model."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from atlas.errors import AtlasError
from atlas.store.arrays import read_set_mask
from atlas.store.repository import insert_arrow


def find_complete(engine: Engine, model_id: int, key: str) -> int | None:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT evidence_id FROM evidence_runs WHERE model_id = :m AND "
                                "params_key = :k AND status = 'complete'"),
                           {"m": model_id, "k": key}).first()
    return None if row is None else int(row[0])


def open_run(engine: Engine, model_id: int, params: dict, key: str) -> int:
    """A new ``running`` evidence run; earlier runs of the same params that never completed
    are removed first (they hold no rows)."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM evidence_runs WHERE model_id = :m AND params_key = :k AND "
                          "status <> 'complete'"), {"m": model_id, "k": key})
        return int(conn.execute(text(
            "INSERT INTO evidence_runs (model_id, status, params, params_key, started_at) "
            "VALUES (:m, 'running', :p, :k, now()) RETURNING evidence_id"),
            {"m": model_id, "p": json.dumps(params, sort_keys=True), "k": key}).scalar_one())


def complete_run(engine: Engine, evidence_id: int, tables: dict[str, pa.Table],
                 n_sequences: int, n_tokens: int) -> None:
    """Insert every row of the run and mark it complete, in one transaction."""
    with engine.begin() as conn:
        for name, data in tables.items():
            insert_arrow(conn, name, data)
        conn.execute(text("UPDATE evidence_runs SET status = 'complete', n_sequences = :s, "
                          "n_tokens = :t, finished_at = now() WHERE evidence_id = :e"),
                     {"s": n_sequences, "t": n_tokens, "e": evidence_id})


def has_logits(engine: Engine, model_id: int) -> bool:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM neuron_logits WHERE model_id = :m"),
                            {"m": model_id}).scalar_one() > 0


def read_vocab(engine: Engine, model_id: int) -> list[str]:
    """A model's stored vocabulary, token id -> text."""
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text(
            "SELECT token FROM vocab WHERE model_id = :m ORDER BY token_id"), {"m": model_id})]


def write_logits(engine: Engine, model_id: int, logits: pa.Table, vocab: list[str]) -> None:
    """A model's logit effects and vocabulary, once (a second call for the model is a no-op)."""
    with engine.begin() as conn:
        if conn.execute(text("SELECT count(*) FROM neuron_logits WHERE model_id = :m"),
                        {"m": model_id}).scalar_one():
            return
        _replace_vocab(conn, model_id, vocab)
        insert_arrow(conn, "neuron_logits", logits)


def _replace_vocab(conn: Connection, model_id: int, vocab: list[str]) -> None:
    conn.execute(text("DELETE FROM vocab WHERE model_id = :m"), {"m": model_id})
    insert_arrow(conn, "vocab", pa.table({
        "model_id": pa.array(np.full(len(vocab), model_id, dtype=np.int32)),
        "token_id": pa.array(np.arange(len(vocab), dtype=np.int32)),
        "token": pa.array(vocab, pa.string())}))


def chosen_neurons(engine: Engine, model_id: int, shape: tuple[int, int], set_ids: list[int],
                   methods: list[str]) -> np.ndarray:
    """The union of the sets ``set_ids`` and of the model's current sets of ``methods``, as a
    boolean mask [n_layers, d_mlp]; every set must be one of the model's (by name and shape)."""
    mask = np.zeros(shape, dtype=bool)
    with engine.connect() as conn:
        model = conn.execute(text("SELECT name, n_layers, d_mlp FROM models WHERE model_id = :m"),
                             {"m": model_id}).one()
        ids = list(set_ids)
        for method in methods:
            found = [r[0] for r in conn.execute(text(
                "SELECT set_id FROM task_sets t JOIN models m USING (model_id) WHERE m.name = :n "
                "AND t.n_layers = :l AND t.d_mlp = :d AND t.method = :me"),
                {"n": model.name, "l": shape[0], "d": shape[1], "me": method})]
            if not found:
                raise AtlasError(f"{model.name} has no '{method}' sets; run atlas ingest first "
                                 "or name sets with --set")
            ids += found
        for set_id in ids:
            row = conn.execute(text("SELECT m.name, m.n_layers, m.d_mlp FROM neuron_sets s JOIN "
                                    "models m USING (model_id) WHERE s.set_id = :s"),
                               {"s": set_id}).first()
            if row is None:
                raise AtlasError(f"no set with id {set_id}")
            if (row.name, row.n_layers, row.d_mlp) != (model.name, *shape):
                raise AtlasError(f"set {set_id} belongs to {row.name}, not {model.name}")
            mask |= read_set_mask(conn, set_id, *shape)
    return mask
