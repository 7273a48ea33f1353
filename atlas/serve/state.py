"""What a running server holds for one atlas database: its sandboxed read-only engine, the one
shared open of the file, and the memory of answers that never change for one state of the atlas.

The views receive it through :func:`state` (a FastAPI dependency); nothing here is global.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request

from atlas.errors import Unavailable
from atlas.query.core import resolve_model
from atlas.query.neurons import flat_mask, flat_scores, model_sets_and_runs
from atlas.serve.cache import LRU, array_bytes, counted
from atlas.serve.evidence import EvidenceMemory
from atlas.serve.lease import SharedOpen
from atlas.serve.live import LiveModels
from atlas.store.db import check_read_schema, connect

SCHEMA_RECHECK_S = 2.0
RUN_CACHE_BYTES = 512 << 20  # scores and ranks: about 180 runs of a 32 × 11,008 model
SET_CACHE_BYTES = 128 << 20  # member masks: about 360 sets of that size
ANSWER_CACHE_BYTES = 64 << 20  # encoded answers (overlaps, reports) per atlas stamp
# Changes whenever a model, a set, a complete run, an evaluation or a complete evidence run is
# added, removed or replaced (ids are never reused within a file; the times tell a replaced file
# apart).
ATLAS_STAMP = """
    SELECT * FROM
        (SELECT count(*), sum(model_id), sum(epoch_us(created_at)) FROM models),
        (SELECT count(*), sum(set_id), sum(epoch_us(created_at)) FROM neuron_sets),
        (SELECT count(*), sum(run_id), sum(epoch_us(started_at)) FROM runs
         WHERE status = 'complete'),
        (SELECT count(*), sum(eval_id), sum(epoch_us(created_at)) FROM evaluations),
        (SELECT count(*), sum(evidence_id), sum(epoch_us(started_at)) FROM evidence_runs
         WHERE status = 'complete')"""


class AtlasState:
    """One atlas database served read-only.

    Args:
        db: the atlas file.
        sql_timeout_s: seconds a ``POST /sql`` statement may run.
        sql_max_rows: rows a ``POST /sql`` answer holds at most.
        threads: DuckDB threads per query (1: concurrent requests, not one query, share the
            cores; None: one per core).
        live: the models loaded for trying sets live (none: those requests answer 404
            with how to enable them).
    """

    def __init__(self, db: str | Path, *, sql_timeout_s: float = 10.0,
                 sql_max_rows: int = 10_000, threads: int | None = 1,
                 live: LiveModels | None = None, linger_s: float = 0.0):
        self.db = Path(db)
        self.live = live or LiveModels()
        self.sql_timeout_s = sql_timeout_s
        self.sql_max_rows = sql_max_rows
        self.threads = threads
        self.linger_s = linger_s
        self._engine: Any = None  # opened on the first request; holds no connection between
        self._shared: SharedOpen | None = None
        self._open_lock = threading.Lock()
        self._checked = 0.0  # when the schema was last found current
        self._identity: tuple[int, int] | None = None  # the file the schema check last saw
        self._runs = LRU(RUN_CACHE_BYTES, array_bytes)
        self._sets = LRU(SET_CACHE_BYTES, array_bytes)
        self._catalogs = LRU(64, counted)
        self._models = LRU(256, counted)
        self._computed = LRU(256, counted)
        self._answers = LRU(ANSWER_CACHE_BYTES, lambda answer: len(answer[0]))
        self.evidence = EvidenceMemory()  # evidence runs' layers, for the neuron view

    @contextmanager
    def request(self) -> Iterator[Pinned]:
        """One sandboxed connection for a whole request, closed when it is answered; the
        schema is checked when the file changed or every ``SCHEMA_RECHECK_S``."""
        shared = self._open()
        with shared.hold():
            now = file_identity(self.db)  # a stat per request: a swapped file is noticed at once
            if now != self._identity or time.monotonic() - self._checked > SCHEMA_RECHECK_S:
                if self._identity is not None and now != self._identity and shared.users > 1:
                    raise Unavailable(f"the database file {self.db} was replaced while requests "
                                      "were in flight; retry")
                check_read_schema(self._engine, self.db)
                self._checked, self._identity = time.monotonic(), now
            with self._engine.connect() as conn:
                yield Pinned(conn)

    def _open(self) -> SharedOpen:
        with self._open_lock:
            if self._shared is None:
                self._engine = connect(self.db, read_only=True, threads=self.threads)
                self._shared = SharedOpen(self._engine.connect, self.db, self.linger_s)
            return self._shared

    def stamp(self, eng: Pinned) -> tuple:
        """What keys the memory of this atlas's state (one small query, once per open of the
        file: requests in flight together share it)."""
        return self._open().once("stamp", lambda: tuple(eng.conn.exec_driver_sql(ATLAS_STAMP).one()))

    def model(self, eng: Pinned, spec: str, stamp: tuple) -> dict:
        """The stored model ``spec`` names, from memory while the atlas is unchanged."""
        return self._models.get((spec, stamp), lambda: resolve_model(eng, spec))

    def sets_and_runs(self, eng: Pinned, model_id: int, stamp: tuple
                      ) -> tuple[list[dict], list[dict]]:
        """A model's sets and complete runs, from memory while the atlas is unchanged."""
        return self._catalogs.get((model_id, stamp), lambda: model_sets_and_runs(eng, model_id))

    def run_scores(self, eng: Pinned, run: dict, shape: tuple[int, int]) -> tuple:
        """A complete run's (scores, ranks), flat [n_layers * d_mlp], from memory."""
        return self._runs.get((run["run_id"], str(run["started_at"])),
                              lambda: flat_scores(eng, run["run_id"], shape))

    def set_mask(self, eng: Pinned, row: dict, shape: tuple[int, int]) -> np.ndarray:
        """A set's members as a flat boolean mask [n_layers * d_mlp], from memory."""
        return self._sets.get((row["set_id"], str(row["created_at"])),
                              lambda: flat_mask(eng, row["set_id"], shape))

    def computed(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """A value computed from stored rows that never change under ``key`` (e.g. set ids)."""
        return self._computed.get(key, make)

    def answer(self, key: Hashable, stamp: tuple, make: Callable[[], tuple[bytes, str]]
               ) -> tuple[bytes, str]:
        """An encoded answer (body, media type), made once per atlas ``stamp``."""
        return self._answers.get((*key, stamp), make)


class Pinned:
    """An engine stand-in whose ``connect()`` hands out one open connection, so the query
    functions a request calls share it instead of opening the file again each."""

    def __init__(self, conn: Any):
        self.conn = conn

    @contextmanager
    def connect(self) -> Iterator[Any]:
        yield self.conn


def file_identity(db: str | Path) -> tuple[int, int] | None:
    """The file's (device, inode): changes when another file is moved into its place."""
    try:
        st = os.stat(db)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def state(request: Request) -> AtlasState:
    """The served atlas (a FastAPI dependency)."""
    return request.app.state.atlas
