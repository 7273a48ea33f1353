"""Where an ingestion keeps its runs: the database, or (on Ray workers) Parquet shards.

Both follow one protocol, so the ingestion job is the same code in a single process and on a
cluster: find a complete run, open (or reopen) a run, checkpoint partial sums, complete it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from sqlalchemy import text
from sqlalchemy.engine import Engine

from atlas.store import repository as repo


class ModelInfo(Protocol):
    """What the store keeps of a model (a loaded model provides it)."""

    name: str
    family: str | None
    n_layers: int
    d_mlp: int
    revision: str
    dtype: str


class TaskInfo(Protocol):
    """What the store keeps of a task (a loaded :class:`atlas.tasks.sni.Task` provides it)."""

    name: str
    source: str
    data_hash: str
    stored_hash: str

    @property
    def n_instances(self) -> int: ...


@dataclass(frozen=True)
class StoredModel:
    """A model as a shard or a snapshot describes it (no weights loaded)."""

    name: str
    family: str | None
    n_layers: int
    d_mlp: int
    revision: str
    dtype: str


def register_model(engine: Engine, model: ModelInfo) -> int:
    """The id of ``model`` in the atlas (one model per name, revision and dtype), added if
    new; every job that writes for a model registers it here."""
    with engine.begin() as conn:
        return repo.ensure_model(conn, model.name, model.family, model.n_layers, model.d_mlp,
                                 model.revision, model.dtype)


@dataclass
class Completed:
    ref: int | str  # run id, or a shard folder
    n_examples: int
    n_tokens: int
    n_selected: int
    n_skipped: int = 0


class RunStore(Protocol):
    def register_model(self, model: ModelInfo) -> None: ...
    def find_complete(self, task: TaskInfo, method: str, key: str) -> Completed | None: ...
    def open_run(self, task: TaskInfo, method: str, params: dict, key: str) -> int | str: ...
    def load_checkpoint(self, handle, shape: tuple[int, int]) -> repo.Checkpoint | None: ...
    def save_checkpoint(self, handle, ckpt: repo.Checkpoint) -> None: ...
    def complete(self, handle, task: TaskInfo, method: str, scores: torch.Tensor, mask: torch.Tensor,
                 selection_rule: str, n_examples: int, n_tokens: int, n_skipped: int) -> Completed: ...
    def ensure_set(self, done: Completed, selection_rule: str, select: repo.Selector) -> int: ...
    def check_replaceable(self, done: Completed) -> None: ...
    def fail(self, handle, error: str) -> None: ...
    def read_scores(self, ref, shape: tuple[int, int]) -> torch.Tensor: ...


class DatabaseRuns:
    """Runs in the atlas database; a run turns complete in the transaction that writes all of its
    score rows and its default set, replacing any older complete run with the same params."""

    def __init__(self, engine: Engine, drop_evaluations: bool = False):
        self.engine = engine
        self.drop_evaluations = drop_evaluations
        self.model_id: int | None = None
        self.model_name = ""
        self._task_ids: dict[str, int] = {}

    def register_model(self, model: ModelInfo) -> None:
        self.model_id, self.model_name = register_model(self.engine, model), model.name

    def task_id(self, task: TaskInfo) -> int:
        if task.data_hash not in self._task_ids:
            with self.engine.begin() as conn:
                self._task_ids[task.data_hash] = repo.ensure_task(
                    conn, task.name, task.source, task.n_instances, task.stored_hash,
                    also=(task.data_hash,))
        return self._task_ids[task.data_hash]

    def find_complete(self, task: TaskInfo, method: str, key: str) -> Completed | None:
        task_id = self.task_id(task)
        with self.engine.begin() as conn:
            done = repo.find_run(conn, self.model_id, task_id, method, key, ("complete",))
            if done is None:
                return None
            # An interrupted --force recomputation of this run: the complete run stands.
            stale = repo.find_run(conn, self.model_id, task_id, method, key, ("running",))
            if stale is not None:
                repo.delete_run(conn, stale.run_id)
            size = conn.execute(text("SELECT coalesce(max(size), 0) FROM neuron_sets "
                                     "WHERE run_id = :r"), {"r": done.run_id}).scalar_one()
        return Completed(done.run_id, done.n_examples, done.n_tokens, int(size),
                         done.n_skipped or 0)

    def open_run(self, task: TaskInfo, method: str, params: dict, key: str) -> int:
        task_id = self.task_id(task)
        with self.engine.begin() as conn:
            found = repo.find_run(conn, self.model_id, task_id, method, key, ("running", "failed"))
            if found:
                conn.execute(text("UPDATE runs SET status = 'running', error = NULL "
                                  "WHERE run_id = :r"), {"r": found.run_id})
                return found.run_id
            return repo.start_run(conn, self.model_id, task_id, method, params, key)

    def load_checkpoint(self, run_id: int, shape: tuple[int, int]) -> repo.Checkpoint | None:
        with self.engine.begin() as conn:
            return repo.load_checkpoint(conn, run_id, shape)

    def save_checkpoint(self, run_id: int, ckpt: repo.Checkpoint) -> None:
        with self.engine.begin() as conn:
            repo.save_checkpoint(conn, run_id, ckpt)

    def complete(self, run_id: int, task: TaskInfo, method: str, scores: torch.Tensor,
                 mask: torch.Tensor, selection_rule: str, n_examples: int, n_tokens: int,
                 n_skipped: int) -> Completed:
        task_id = self.task_id(task)
        with self.engine.begin() as conn:
            key = conn.execute(text("SELECT params_key FROM runs WHERE run_id = :r"),
                               {"r": run_id}).scalar_one()
            older = [r.run_id for r in conn.execute(text(
                "SELECT run_id FROM runs WHERE model_id = :m AND task_id = :t AND method = :method "
                "AND params_key = :k AND status = 'complete' AND run_id <> :r"),
                {"m": self.model_id, "t": task_id, "method": method, "k": key, "r": run_id})]
            for old in older:  # --force: the new run replaces the old one, atomically
                repo.delete_run(conn, old, self.drop_evaluations)
            repo.write_scores(conn, run_id, scores)
            name = repo.set_name(conn, self.model_name, task.name, method, run_id)
            repo.write_set(conn, name, self.model_id, task_id, run_id, selection_rule, mask, method)
            repo.complete_run(conn, run_id, n_examples=n_examples, n_tokens=n_tokens,
                              n_skipped=n_skipped)
        return Completed(run_id, n_examples, n_tokens, int(mask.sum()), n_skipped)

    def check_replaceable(self, done: Completed) -> None:
        """Before --force recomputes a complete run: refuse if that would orphan evaluations."""
        if self.drop_evaluations:
            return
        with self.engine.connect() as conn:
            repo.refuse_orphaning(conn, repo.run_sets(conn, int(done.ref)),
                                  f"--force on run {done.ref}")

    def ensure_set(self, done: Completed, selection_rule: str, select: repo.Selector) -> int:
        """The size of the complete run's set under ``selection_rule``, made from stored scores by
        ``select`` if new."""
        with self.engine.begin() as conn:
            return repo.set_from_run(conn, int(done.ref), selection_rule, select)[1]

    def fail(self, run_id: int, error: str) -> None:
        with self.engine.begin() as conn:
            repo.fail_run(conn, run_id, error)

    def read_scores(self, run_id: int, shape: tuple[int, int]) -> torch.Tensor:
        with self.engine.begin() as conn:
            return repo.read_scores(conn, run_id, *shape)
