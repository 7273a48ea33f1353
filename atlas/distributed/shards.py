"""Runs kept as Parquet shards in a folder: what Ray workers write instead of the database.

One folder per run, ``<root>/<model>/<task>/<method>-<params key>/``, holding
``checkpoint.npz`` (partial sums, while running), ``scores.parquet`` and, written last and
atomically, ``meta.json``: a shard is complete exactly when its ``meta.json`` exists.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from atlas.errors import AtlasError
from atlas.models.loading import LoadedModel
from atlas.scoring.selection import require_finite
from atlas.store.repository import Checkpoint, Selector
from atlas.store.runs import Completed
from atlas.tasks.sni import Task


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


class ShardRuns:
    """A :class:`~atlas.store.runs.RunStore` over a shard folder (no database access)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.model: dict = {}
        self._params: dict[str, tuple[dict, str]] = {}

    def register_model(self, loaded: LoadedModel) -> None:
        self.model = {"name": loaded.name, "family": loaded.adapter.family,
                      "n_layers": loaded.n_layers, "d_mlp": loaded.d_mlp,
                      "revision": loaded.revision, "dtype": loaded.dtype}

    def folder(self, task: Task, method: str, key: str) -> Path:
        return self.root / _safe(self.model["name"]) / _safe(task.name) / f"{method}-{key}"

    def find_complete(self, task: Task, method: str, key: str) -> Completed | None:
        folder = self.folder(task, method, key)
        if not (folder / "meta.json").is_file():
            return None
        meta = json.loads((folder / "meta.json").read_text())
        return Completed(str(folder), meta["n_examples"], meta["n_tokens"], meta["n_selected"],
                         meta.get("n_skipped", 0))

    def check_replaceable(self, done: Completed) -> None:
        """A shard has no evaluations; the driver checks the database on import."""

    def ensure_set(self, done: Completed, selection_rule: str, select: Selector) -> int:
        """Shards carry scores only; the driver makes sets on import (`atlas select` after)."""
        return done.n_selected

    def open_run(self, task: Task, method: str, params: dict, key: str) -> str:
        folder = self.folder(task, method, key)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "error.txt").unlink(missing_ok=True)
        self._params[str(folder)] = (params, key)
        return str(folder)

    def load_checkpoint(self, handle: str, shape: tuple[int, int]) -> Checkpoint | None:
        path = Path(handle) / "checkpoint.npz"
        if not path.is_file():
            return None
        data = np.load(path)
        return Checkpoint(int(data["chunk_size"]), int(data["n_done"]), int(data["n_tokens"]),
                          torch.from_numpy(data["sums"].reshape(shape).copy()))

    def save_checkpoint(self, handle: str, ckpt: Checkpoint) -> None:
        def write(tmp: Path) -> None:
            with tmp.open("wb") as fh:
                np.savez(fh, chunk_size=ckpt.chunk_size, n_done=ckpt.n_done,
                         n_tokens=ckpt.n_tokens, sums=ckpt.sums.numpy())

        _atomic_write(Path(handle) / "checkpoint.npz", write)

    def complete(self, handle: str, task: Task, method: str, scores: torch.Tensor,
                 mask: torch.Tensor, selection_rule: str, n_examples: int, n_tokens: int,
                 n_skipped: int) -> Completed:
        folder = Path(handle)
        params, key = self._params[handle]
        n_layers, d_mlp = scores.shape
        table = pa.table({
            "layer": pa.array(np.repeat(np.arange(n_layers, dtype=np.int16), d_mlp)),
            "neuron": pa.array(np.tile(np.arange(d_mlp, dtype=np.int32), n_layers)),
            "score": pa.array(scores.numpy().astype(np.float32).ravel()),
        })
        _atomic_write(folder / "scores.parquet", lambda tmp: pq.write_table(table, tmp))
        meta = {"model": self.model,
                "task": {"name": task.name, "source": task.source,
                         "n_instances": len(task.instances), "data_hash": task.data_hash,
                         "stored_hash": task.stored_hash},
                "method": method, "params": params, "params_key": key, "rule": selection_rule,
                "n_examples": n_examples, "n_tokens": n_tokens, "n_skipped": n_skipped,
                "n_selected": int(mask.sum()), "finished_at": time.time()}
        _atomic_write(folder / "meta.json", lambda tmp: tmp.write_text(json.dumps(meta)))
        (folder / "checkpoint.npz").unlink(missing_ok=True)
        return Completed(str(folder), n_examples, n_tokens, int(mask.sum()), n_skipped)

    def fail(self, handle: str, error: str) -> None:
        (Path(handle) / "error.txt").write_text(error)

    def read_scores(self, ref: str, shape: tuple[int, int]) -> torch.Tensor:
        return read_shard_scores(Path(ref), shape)


def read_shard_scores(folder: Path, shape: tuple[int, int]) -> torch.Tensor:
    """A complete shard's scores [n_layers, d_mlp], validated."""
    table = pq.read_table(folder / "scores.parquet")
    n_layers, d_mlp = shape
    if table.num_rows != n_layers * d_mlp:
        raise AtlasError(f"shard {folder} has {table.num_rows} rows, expected {n_layers * d_mlp}")
    layer = table["layer"].to_numpy().astype(np.int64)
    neuron = table["neuron"].to_numpy().astype(np.int64)
    score = table["score"].to_numpy()
    if layer.min() < 0 or layer.max() >= n_layers or neuron.min() < 0 or neuron.max() >= d_mlp:
        raise AtlasError(f"shard {folder} has neuron indices outside {n_layers}×{d_mlp}")
    require_finite(score, f"shard {folder}")
    out = np.full((n_layers, d_mlp), np.nan, dtype=np.float32)
    out[layer, neuron] = score
    if np.isnan(out).any():
        raise AtlasError(f"shard {folder} misses some neurons")
    return torch.from_numpy(out)


def complete_shards(root: str | Path) -> list[Path]:
    return sorted(p.parent for p in Path(root).glob("*/*/*/meta.json"))
