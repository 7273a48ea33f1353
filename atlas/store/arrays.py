"""A run's scores and a set's members read as numpy arrays (no torch: the read side uses it)."""

from __future__ import annotations

import numpy as np
from sqlalchemy.engine import Connection


def _duck(conn: Connection):
    """The raw duckdb connection under a SQLAlchemy connection (same transaction)."""
    return conn.connection.dbapi_connection


def read_scores(conn: Connection, run_id: int, n_layers: int, d_mlp: int) -> np.ndarray:
    """A run's scores as float32 [n_layers, d_mlp]."""
    cols = _duck(conn).execute(
        "SELECT layer, neuron, score FROM neuron_scores WHERE run_id = ?", [run_id]
    ).fetchnumpy()
    out = np.zeros((n_layers, d_mlp), dtype=np.float32)
    out[cols["layer"].astype(np.int64), cols["neuron"].astype(np.int64)] = cols["score"]
    return out


def read_set_mask(conn: Connection, set_id: int, n_layers: int, d_mlp: int) -> np.ndarray:
    """A set's members as a boolean array [n_layers, d_mlp]."""
    cols = _duck(conn).execute(
        "SELECT layer, neuron FROM neuron_set_members WHERE set_id = ?", [set_id]).fetchnumpy()
    out = np.zeros((n_layers, d_mlp), dtype=bool)
    out[cols["layer"].astype(np.int64), cols["neuron"].astype(np.int64)] = True
    return out
