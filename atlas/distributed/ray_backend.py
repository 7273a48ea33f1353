"""Distributed ingestion on Ray: one job per (model, group of tasks), the driver alone writes.

Workers load their model once, score their tasks with the ordinary :class:`~atlas.ingest.Ingestor`
over a :class:`~atlas.distributed.shards.ShardRuns` folder (checkpointed, so a re-run resumes),
and never open the database. The driver validates every complete shard and imports each run in
one transaction. Ray is imported only here (``pip install 'atlas-neurons[ray]'``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from atlas.errors import AtlasError, first_line
from atlas.ingest import IngestOptions, Ingestor, IngestResult
from atlas.scoring.selection import select
from atlas.store.runs import DatabaseRuns, StoredModel
from atlas.tasks.sni import Task


@dataclass
class RayJob:
    model: str
    tasks: list[Task]
    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None


def score_job(job: RayJob, options: IngestOptions, shard_root: str) -> list[IngestResult]:
    """Runs on a worker: load the model once and score all of the job's tasks into shards."""
    from atlas.distributed.shards import ShardRuns
    from atlas.models.loading import load_model

    loaded = load_model(job.model, device=job.device, dtype=job.dtype, device_map=job.device_map)
    return Ingestor(loaded, options, ShardRuns(shard_root)).run(job.tasks)


def plan_jobs(models: list[str], tasks: list[Task], tasks_per_job: int | None, **kwargs) -> list[RayJob]:
    size = tasks_per_job or len(tasks)
    if "lape" in kwargs.pop("methods", []) and size < len(tasks):
        raise AtlasError("method lape compares all tasks of a job: drop --tasks-per-job")
    return [RayJob(model, tasks[i : i + size], **kwargs)
            for model in models for i in range(0, len(tasks), size)]


def run_on_ray(jobs: list[RayJob], options: IngestOptions, shard_root: str | Path, *,
               address: str | None = None, gpus_per_job: float = 0, cpus_per_job: float = 1,
               init_kwargs: dict | None = None) -> tuple[list[IngestResult], list[str]]:
    """Fan the jobs out; return the results of the jobs that finished and the errors of the rest."""
    try:
        import ray
    except ImportError as err:
        raise AtlasError("--backend ray needs Ray: pip install 'atlas-neurons[ray]'") from err
    if not ray.is_initialized():
        ray.init(address=address, **(init_kwargs or {}))
    remote = ray.remote(num_gpus=gpus_per_job, num_cpus=cpus_per_job, max_retries=0)(score_job)
    refs = [remote.remote(job, options, str(shard_root)) for job in jobs]
    results, errors = [], []
    for job, ref in zip(jobs, refs):
        try:
            results += ray.get(ref)
        except Exception as err:  # a worker's failure must not stop the import of the others
            errors.append(f"{job.model} [{', '.join(t.short_name for t in job.tasks)}]: "
                          f"{first_line(err)}")
    return results, errors


def import_shards(engine: Engine, folders: list[Path], *, force: bool = False) -> list[dict]:
    """Validate complete shards and make each one a complete run in the database (atomically);
    runs already complete with the same params are kept unless ``force``."""
    from atlas.distributed.shards import read_shard_scores

    imported = []
    for folder in folders:
        meta = json.loads((folder / "meta.json").read_text())
        model, info = meta["model"], meta["task"]
        shape = (model["n_layers"], model["d_mlp"])
        scores = read_shard_scores(folder, shape)
        runs = DatabaseRuns(engine)
        runs.register_model(StoredModel(model["name"], model["family"], *shape,
                                        model["revision"], model["dtype"]))
        # A stand-in for the task: the store needs its name, source, size and data hash only.
        task = Task(info["name"], "", [None] * info["n_instances"], info["source"],
                    info["data_hash"], info.get("stored_hash", ""))
        status = "imported"
        if runs.find_complete(task, meta["method"], meta["params_key"]) and not force:
            status = "reused"
        else:
            handle = runs.open_run(task, meta["method"], meta["params"], meta["params_key"])
            runs.complete(handle, task, meta["method"], scores, select(scores, meta["rule"]),
                          meta["rule"], meta["n_examples"], meta["n_tokens"], meta["n_skipped"])
        imported.append({"model": model["name"], "task": info["name"], "method": meta["method"],
                         "status": status, "examples": meta["n_examples"],
                         "tokens": meta["n_tokens"], "selected": meta["n_selected"]})
    return imported
