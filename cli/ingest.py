"""`atlas ingest`: score tasks with methods for one model and store the results."""

from __future__ import annotations

import time

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from atlas.errors import AtlasError
from atlas.models.names import DEFAULT_MODEL
from atlas.progress import Reporter
from cli.common import DbOption, SniDirOption, console, err_console, rich_table, sni_path


class RichReporter(Reporter):
    def __init__(self, progress: Progress):
        self.progress = progress
        self.task_id = None
        self.tokens = 0
        self.started = 0.0

    def start(self, label: str, total: int) -> None:
        self.task_id = self.progress.add_task(label, total=total, rate="")
        self.tokens, self.started = 0, time.perf_counter()

    def advance(self, n_examples: int, n_tokens: int) -> None:
        self.tokens += n_tokens
        rate = self.tokens / max(time.perf_counter() - self.started, 1e-6)
        self.progress.update(self.task_id, advance=n_examples, rate=f"{rate:,.0f} tok/s")

    def finish(self) -> None:
        if self.task_id is not None:
            self.progress.stop_task(self.task_id)

    def message(self, text: str) -> None:
        self.progress.console.print(text)


def ingest(
    model: list[str] = typer.Option([DEFAULT_MODEL], "--model", "-m",
                                    help="Alias, .gguf file, HF folder or hub id (repeatable)."),
    task: list[str] = typer.Option(..., "--task", "-t",
                                   help="SNI task name or id, task file, or the preset 'paper'."),
    method: list[str] = typer.Option(["cgvst"], "--method",
                                     help="cgvst, cgvst_marker, gv, grad_x_act, act_mean, act_prob, "
                                          "lape, random."),
    preset: str = typer.Option(None, help="'reference': everything as the paper's released code "
                                          "(file-order split, whole half, 1300-token filter, "
                                          "5 shots, demonstrations from the whole half)."),
    split: str = typer.Option("stratified", help="stratified (seeded, per label) or file "
                                                 "(first half of the file scores)."),
    demos_include_query: bool = typer.Option(False, help="Let a query be its own demonstration "
                                                         "(as the released code may)."),
    join_outputs: bool = typer.Option(False, help="Answer with all gold outputs joined "
                                                  "(released code) instead of the first."),
    shots: int = typer.Option(5, help="Demonstrations per prompt."),
    examples: int = typer.Option(None, help="Scoring examples per task (default: the whole half)."),
    seed: int = typer.Option(0, help="Seed for demonstrations, subsampling and random scores."),
    split_seed: int = typer.Option(0, help="Seed of the scoring/evaluation split."),
    batch_size: int = typer.Option(8, help="Examples per batch."),
    max_batch_tokens: int = typer.Option(None, help="Token budget per padded batch."),
    max_tokens: int = typer.Option(None, help="Skip examples longer than this (default: context)."),
    checkpoint_every: int = typer.Option(16, help="Examples between checkpoints."),
    selection_rule: str = typer.Option("top:0.05", "--rule",
                                       help="Default set: top:RATE (global) or layer:K."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    dtype: str = typer.Option("auto", help="float32, bfloat16, float16 or auto."),
    device_map: str = typer.Option(None, help="'auto' splits the model across GPUs (accelerate)."),
    sni_dir: list[str] = SniDirOption,
    skip_missing: bool = typer.Option(False, help="Skip tasks that cannot be found."),
    exemplars: int = typer.Option(None, min=0, help="Exemplars per neuron and sign recorded "
                                  "in the scoring pass (atlas describe's evidence; 0: off; "
                                  "default 8 for models of up to 65,536 neurons, else 0)."),
    force: bool = typer.Option(False, help="Recompute even when a complete run exists."),
    drop_evaluations: bool = typer.Option(False, help="With --force: also delete the "
                                                      "evaluations of the replaced run's sets."),
    backend: str = typer.Option("local", help="local (this process) or ray."),
    address: str = typer.Option(None, help="Ray cluster address (default: start a local one)."),
    shards: str = typer.Option(None, help="Shard folder for Ray workers (default: DB.shards)."),
    tasks_per_job: int = typer.Option(None, help="Tasks per Ray job (default: all of a model)."),
    gpus_per_job: float = typer.Option(None, help="GPUs per Ray job (default: 1 with CUDA, else 0)."),
    cpus_per_job: float = typer.Option(1, help="CPUs per Ray job."),
    db: str = DbOption,
) -> None:
    """Score neurons of MODEL on each TASK and store scores, runs and default neuron sets."""
    from atlas.ingest import IngestOptions, Ingestor, load_tasks
    from atlas.models.loading import load_model
    from atlas.presets import PRESET_DTYPE
    from atlas.store import open_db
    from atlas.store.runs import DatabaseRuns
    from atlas.tasks.sni import expand_task_names

    options = IngestOptions(
        methods=method, shots=shots, examples=examples, seed=seed, split_seed=split_seed,
        batch_size=batch_size, max_batch_tokens=max_batch_tokens, max_tokens=max_tokens,
        checkpoint_every=checkpoint_every, selection_rule=selection_rule, force=force,
        skip_missing=skip_missing,
        sni_dir=sni_path(sni_dir), split=split, demos_include_query=demos_include_query,
        join_outputs=join_outputs, preset=preset, exemplars=exemplars,
    )
    if preset and dtype == "auto":
        dtype = PRESET_DTYPE.get(preset, dtype)
    if preset:
        console.print(f"preset {preset}: {dtype}, shots {options.shots}, split {options.split}, "
                      f"max tokens {options.max_tokens}, examples "
                      f"{options.examples or 'whole half'}, demonstrations from the whole half"
                      f"{' (query included)' if options.demos_include_query else ''}")
    tasks = load_tasks(expand_task_names(task),
                       options, lambda text: err_console.print(f"[yellow]warning:[/] {escape(text)}"))
    if backend == "ray":
        _ingest_ray(model, tasks, options, device, dtype, device_map, address, shards,
                    tasks_per_job, gpus_per_job, cpus_per_job, db)
        return
    if backend != "local":
        raise typer.BadParameter(f"unknown backend '{backend}'; choose local or ray")
    engine = open_db(db)
    results = []
    try:
        for spec in model:
            with console.status(f"loading {spec}"):
                loaded = load_model(spec, device=device, dtype=dtype, device_map=device_map)
            console.print(f"model {loaded.name}: {loaded.n_layers} layers × {loaded.d_mlp} "
                          f"neurons, {loaded.dtype} on {loaded.device}")
            columns = [TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]}", markup=False), TimeElapsedColumn(),
                       TimeRemainingColumn()]
            with Progress(*columns, console=console) as progress:
                results += Ingestor(loaded, options, DatabaseRuns(engine, drop_evaluations),
                                    RichReporter(progress), evidence_db=engine).run(tasks)
            del loaded
    finally:
        engine.dispose()
    from atlas.store.identity import task_labels

    names = sorted({r.task for r in results})
    labels = dict(zip(names, task_labels(names)))
    rows = [{"task": labels[r.task], "method": r.method, "run": r.run_id, "status": r.status,
             "examples": r.n_examples, "skipped": r.n_skipped, "tokens": r.n_tokens,
             "seconds": round(r.seconds, 1), "selected": r.n_selected} for r in results]
    console.print(rich_table(rows, title="ingest summary"))


def _ingest_ray(models, tasks, options, device, dtype, device_map, address, shards, tasks_per_job,
                gpus_per_job, cpus_per_job, db) -> None:
    import torch

    from atlas.distributed.ray_backend import import_shards, plan_jobs, run_on_ray
    from atlas.distributed.shards import complete_shards
    from atlas.store import open_db
    from atlas.store.db import db_path

    shard_root = shards or f"{db_path(db)}.shards"
    if gpus_per_job is None:
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        gpus_per_job = 1 if cuda else 0
    engine = open_db(db)  # fail early (lock, schema) before any worker starts
    engine.dispose()
    jobs = plan_jobs(models, tasks, tasks_per_job, device=device, dtype=dtype,
                     device_map=device_map, methods=options.methods)
    console.print(f"{len(jobs)} Ray job(s), shards in {shard_root}")
    with console.status("workers scoring"):
        results, errors = run_on_ray(jobs, options, shard_root, address=address,
                                     gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job)
    for error in errors:
        err_console.print(f"[yellow]job failed:[/] {escape(str(error))} (re-run to resume)")
    engine = open_db(db)
    try:
        done = {str(r.run_id) for r in results}
        folders = [f for f in complete_shards(shard_root) if str(f) in done]
        rows = import_shards(engine, folders, force=options.force)
    finally:
        engine.dispose()
    console.print(rich_table(rows, title="ingest summary (ray)"))
    if errors:
        raise AtlasError(f"{len(errors)} Ray job(s) failed; completed runs are stored, "
                         "re-run the same command to resume the rest")


def select_cmd(
    model: str = typer.Option(..., "--model", "-m",
                              help="Stored model: NAME, NAME@DTYPE, NAME@REVISION or #ID."),
    task: list[str] = typer.Option(..., "--task", "-t", help="Stored task(s): full name or SNI id."),
    method: str = typer.Option("cgvst", "--method", help="Scoring method of the run."),
    selection_rule: str = typer.Option(..., "--rule", help="top:RATE (global) or layer:K (per layer)."),
    db: str = DbOption,
) -> None:
    """Make a neuron set from a complete run's stored scores (nothing is recomputed)."""
    from atlas.scoring.selection import parse_rule, select
    from atlas.store import open_db
    from atlas.store import repository as repo
    from atlas.store.identity import latest_complete_run, resolve_model, resolve_task

    engine = open_db(db, create=False)
    rows = []
    try:
        with engine.begin() as conn:  # every task checked before any set is written
            found = resolve_model(conn, model)
            runs = [latest_complete_run(conn, found["model_id"],
                                             resolve_task(conn, spec)["task_id"], method)
                    for spec in task]
            parse_rule(selection_rule)
            for run_id in runs:
                name, size, created = repo.set_from_run(conn, run_id, selection_rule, select)
                rows.append({"set": name, "run": run_id, "rule": selection_rule, "size": size,
                             "status": "created" if created else "exists"})
    finally:
        engine.dispose()
    console.print(rich_table(rows, title="neuron sets"))


def split_cmd(
    model: str = typer.Option(..., "--model", "-m",
                              help="Stored model: NAME, NAME@DTYPE, NAME@REVISION or #ID."),
    method: str = typer.Option("cgvst", "--method", help="Method of the sets to split."),
    shared_in: int = typer.Option(None, "--shared-in", min=1,
                                  help="A neuron is shared when it is in at least this many of "
                                       "the model's sets of the method (default: more than half)."),
    db: str = DbOption,
) -> None:
    """Split every task's set into the neurons it shares with most tasks and those specific to
    it, stored as sets of methods METHOD-shared and METHOD-specific (ablate them with --method)."""
    from atlas.store import open_db
    from atlas.store.derived import split_shared
    from atlas.store.identity import resolve_model

    engine = open_db(db, create=False)
    try:
        with engine.begin() as conn:
            rows = split_shared(conn, resolve_model(conn, model)["model_id"], method, shared_in)
    finally:
        engine.dispose()
    console.print(rich_table(rows, title="neuron sets"))
