"""`atlas ablate`, `atlas amplify`, `atlas report`: the intervention experiment."""

from __future__ import annotations

import sys

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from atlas.models.names import DEFAULT_MODEL
from atlas.progress import Reporter
from cli.common import DbOption, console, rich_table
from cli.query import plot_app


class SpinnerReporter(Reporter):
    def __init__(self, progress: Progress):
        self.progress, self.task_id = progress, None

    def start(self, label: str, total: int) -> None:
        self.task_id = self.progress.add_task(f"evaluating {label}", total=total)

    def advance(self, n_examples: int, n_tokens: int) -> None:
        self.progress.update(self.task_id, advance=n_examples)

    def finish(self) -> None:
        self.progress.remove_task(self.task_id)


def _experiment(tasks: list[str], model: str, set_name: str | None, method: str, factor: float,
                eval_task: list[str], examples: int, metric: str, shots: int, seed: int,
                control_seed: int, batch_size: int, device: str, dtype: str, sni_dir: str | None,
                db: str | None, control: bool = True, preset: str | None = None,
                split: str = "stratified") -> None:
    from atlas.intervene.experiment import AblateOptions, Experiment, find_set, set_owner
    from atlas.models.loading import display_name, load_model, resolve_device, resolve_dtype
    from atlas.store import open_db

    options = AblateOptions(factor=factor, metric=metric, examples=examples, shots=shots, seed=seed,
                            control_seed=control_seed, batch_size=batch_size, control=control,
                            eval_tasks=eval_task or ["all"], sni_dir=sni_dir, split=split,
                            preset=preset)
    if preset:
        console.print(f"preset {preset}: metric {options.metric}, shots {options.shots}, split "
                      f"{options.split}, whole evaluation half, released prompts")
    engine = open_db(db)
    try:
        stored = set_owner(engine, display_name(model), resolve_dtype(dtype, resolve_device(device)))
        targets = [find_set(engine, stored, task=t, method=method, name=set_name)
                   for t in (tasks or [None])]
        with console.status(f"loading {model}"):
            loaded = load_model(model, device=device, dtype=dtype)
        columns = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
        for target in targets:
            with Progress(*columns, console=console, transient=True) as progress:
                results = Experiment(engine, loaded, options, SpinnerReporter(progress)).run(target)
            console.print(rich_table(results, title=f"{target['name']} × {factor} · {metric}"))
    finally:
        engine.dispose()


def _intervention_command(name: str, default_factor: float, doc: str):
    """An ablate-style command; ablate and amplify differ only in the default factor."""

    def command(task: list[str] = typer.Option(None, "--task", "-t",
                                               help="Task(s) whose set is applied, one after another."),
                model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"),
                set_name: str = typer.Option(None, "--set", help="A stored set by name."),
                method: str = typer.Option("cgvst", "--method", help="Method of the task's set."),
                factor: float = typer.Option(default_factor, help="0 inhibits, > 1 amplifies."),
                eval_task: list[str] = typer.Option(
                    ["all"], "--eval-task", help="Tasks to evaluate ('all': every task with a set)."),
                examples: int = typer.Option(50, help="Held-out examples per evaluation task."),
                metric: str = typer.Option("label_likelihood",
                                           help="label_likelihood, label_prob, exact_match or "
                                                "reference_em."),
                preset: str = typer.Option(None, help="'reference': evaluate as the released "
                                                      "code (see README)."),
                split: str = typer.Option("stratified", help="stratified or file."),
                shots: int = typer.Option(5), seed: int = typer.Option(0),
                control_seed: int = typer.Option(0, help="Seed of the random control set."),
                control: bool = typer.Option(True, help="Also evaluate a random control set."),
                batch_size: int = typer.Option(8), device: str = typer.Option("auto"),
                dtype: str = typer.Option("auto"), sni_dir: str = typer.Option(None),
                db: str = DbOption) -> None:
        if not task and not set_name:
            raise typer.BadParameter("give --task or --set")
        _experiment(task, model, set_name, method, factor, eval_task, examples, metric, shots, seed,
                    control_seed, batch_size, device, dtype, sni_dir, db, control, preset, split)

    command.__name__, command.__doc__ = name, doc
    return command


ablate = _intervention_command(
    "ablate", 0.0,
    "Scale a task's stored neuron set and measure accuracy on every task, with a random control.")
amplify = _intervention_command("amplify", 2.0, "Like ablate, with a default factor of 2 (amplification).")


def _fmt(v):
    return None if v is None else round(float(v), 4)


ConfigOption = typer.Option(None, "--config", help="Evaluation configuration (a prefix of its "
                                                     "hash) when the model has several.")


def report(model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"),
           method: str = typer.Option("cgvst"), factor: float = typer.Option(0.0),
           metric: str = typer.Option("label_likelihood"), config: str = ConfigOption,
           format: str = typer.Option("markdown", "--format", "-f", help="markdown, csv or json."),
           db: str = DbOption) -> None:
    """Task × task matrix of relative accuracy change, random controls and specificity indices."""
    from atlas.intervene.experiment import report_matrix
    from atlas.intervene.stats import describe_tests, report_tests
    from atlas.store import open_db

    engine = open_db(db, read_only=True)
    names, cols, matrix, summary = report_matrix(engine, model, method, factor, metric, config)
    engine.dispose()
    if format == "json":
        import json

        sys.stdout.write(json.dumps({"rows": names, "columns": cols, "rel_change": matrix,
                                     "summary": summary, "tests": report_tests(summary)},
                                    indent=1) + "\n")
        return
    if format == "csv":
        sys.stdout.write("set," + ",".join(cols) + "\n")
        for name, row in zip(names, matrix):
            sys.stdout.write(name + "," + ",".join("" if v is None else f"{v:.4f}" for v in row) + "\n")
        return
    lines = [f"### {model} · {method} · factor {factor:g} · {metric}", "",
             f"Relative change of {metric} against the unmodified model (rows: intervened set).", "",
             "| set | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, row in zip(names, matrix):
        lines.append(f"| {name} | " + " | ".join("" if v is None else f"{v:+.3f}" for v in row) + " |")
    lines += ["", "| set | target change | mean change, other tasks | specificity index | "
              "control, target |", "|---|---|---|---|---|"]
    for s in summary:
        cells = [_fmt(s[k]) for k in ("target_change", "others_mean_change", "specificity_index",
                                      "control_target_change")]
        lines.append(f"| {s['set']} | " + " | ".join("" if c is None else f"{c:+.3f}" for c in cells)
                     + " |")
    lines += ["", describe_tests(report_tests(summary))]
    sys.stdout.write("\n".join(lines) + "\n")


@plot_app.command("report")
def plot_report(model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"),
                method: str = typer.Option("cgvst"), factor: float = typer.Option(0.0),
                metric: str = typer.Option("label_likelihood"), config: str = ConfigOption,
                output: str = typer.Option(..., "--output", "-o"), db: str = DbOption) -> None:
    """Heatmap of the intervention report."""
    import numpy as np

    from atlas.intervene.experiment import report_matrix
    from atlas.query.plots import heatmap
    from atlas.store import open_db

    engine = open_db(db, read_only=True)
    names, cols, matrix, _ = report_matrix(engine, model, method, factor, metric, config)
    engine.dispose()
    values = np.array([[np.nan if v is None else v for v in row] for row in matrix])
    heatmap(values, names, cols, f"{model} · {method} × {factor:g} · {metric}", output,
            f"relative change of {metric}", cmap="RdBu", center=True, fmt="+.2f")
    console.print(output)
