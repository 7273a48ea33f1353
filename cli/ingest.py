"""`atlas ingest`: score tasks with methods for one model and store the results."""

from __future__ import annotations

import time

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from atlas.ingest import IngestOptions, Ingestor, Reporter, load_tasks
from atlas.models.loading import DEFAULT_MODEL, load_model
from atlas.store import open_db
from atlas.store.runs import DatabaseRuns
from atlas.tasks.sni import expand_task_names
from cli.common import DbOption, console, err_console, rich_table


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
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m",
                              help="Alias, .gguf file, HF folder or hub id."),
    task: list[str] = typer.Option(..., "--task", "-t",
                                   help="SNI task name or id, task file, or the preset 'paper'."),
    method: list[str] = typer.Option(["cgvst"], "--method",
                                     help="cgvst, gv, grad_x_act, act_mean, act_prob, lape, random."),
    shots: int = typer.Option(5, help="Demonstrations per prompt."),
    examples: int = typer.Option(None, help="Scoring examples per task (default: the whole half)."),
    seed: int = typer.Option(0, help="Seed for demonstrations, subsampling and random scores."),
    split_seed: int = typer.Option(0, help="Seed of the scoring/evaluation split."),
    batch_size: int = typer.Option(8, help="Examples per batch."),
    max_batch_tokens: int = typer.Option(None, help="Token budget per padded batch."),
    max_tokens: int = typer.Option(None, help="Skip examples longer than this (default: context)."),
    checkpoint_every: int = typer.Option(16, help="Examples between checkpoints."),
    rule: str = typer.Option("top:0.05", help="Default set: top:RATE (global) or layer:K."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    dtype: str = typer.Option("auto", help="float32, bfloat16, float16 or auto."),
    device_map: str = typer.Option(None, help="'auto' splits the model across GPUs (accelerate)."),
    sni_dir: str = typer.Option(None, help="Folder of SNI task files (default: $ATLAS_SNI_DIR)."),
    skip_missing: bool = typer.Option(False, help="Skip tasks that cannot be found."),
    force: bool = typer.Option(False, help="Recompute even when a complete run exists."),
    db: str = DbOption,
) -> None:
    """Score neurons of MODEL on each TASK and store scores, runs and default neuron sets."""
    options = IngestOptions(
        methods=method, shots=shots, examples=examples, seed=seed, split_seed=split_seed,
        batch_size=batch_size, max_batch_tokens=max_batch_tokens, max_tokens=max_tokens,
        checkpoint_every=checkpoint_every, rule=rule, force=force, skip_missing=skip_missing,
        sni_dir=sni_dir,
    )
    tasks = load_tasks(expand_task_names(task),
                       options, lambda text: err_console.print(f"[yellow]warning:[/] {text}"))
    engine = open_db(db)
    try:
        with console.status(f"loading {model}"):
            loaded = load_model(model, device=device, dtype=dtype, device_map=device_map)
        console.print(f"model {loaded.name}: {loaded.n_layers} layers × {loaded.d_mlp} neurons, "
                      f"{loaded.dtype} on {loaded.device}")
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=console) as progress:
            results = Ingestor(loaded, options, DatabaseRuns(engine),
                               RichReporter(progress)).run(tasks)
    finally:
        engine.dispose()
    rows = [{"task": r.task, "method": r.method, "run": r.run_id, "status": r.status,
             "examples": r.n_examples, "skipped": r.n_skipped, "tokens": r.n_tokens,
             "seconds": round(r.seconds, 1), "selected": r.n_selected} for r in results]
    console.print(rich_table(rows, title="ingest summary"))
