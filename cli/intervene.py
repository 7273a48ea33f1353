"""`atlas ablate`, `atlas amplify`, `atlas report`: the intervention experiment."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from atlas.errors import AtlasError
from atlas.models.names import DEFAULT_MODEL
from atlas.progress import Reporter
from cli.common import DbOption, SniDirOption, console, err_console, rich_table, sni_path


class SpinnerReporter(Reporter):
    def __init__(self, progress: Progress):
        self.progress, self.task_id = progress, None

    def start(self, label: str, total: int) -> None:
        self.task_id = self.progress.add_task(f"evaluating {label}", total=total)

    def advance(self, n_examples: int, n_tokens: int) -> None:
        self.progress.update(self.task_id, advance=n_examples)

    def finish(self) -> None:
        self.progress.remove_task(self.task_id)


def _options(args: dict):
    """The experiment's options from a command's arguments: every argument named like an
    :class:`AblateOptions` field is that field (one mapping, no list of parameters to keep in
    step)."""
    from dataclasses import fields

    from atlas.intervene.experiment import AblateOptions

    given = {**args, "eval_tasks": args["eval_tasks"] or ["all"],
             "sni_dir": sni_path(args["sni_dir"])}
    options = AblateOptions(**{f.name: given[f.name] for f in fields(AblateOptions)
                               if f.name in given})
    if options.preset:
        console.print(f"preset {options.preset}: metric {options.metric}, shots {options.shots}, "
                      f"split {options.split}, whole evaluation half, released prompts")
    return options


def _experiment(args: dict) -> None:
    from atlas.intervene.experiment import Experiment, find_set, set_owner
    from atlas.models.loading import display_name, load_model, resolve_device, resolve_dtype
    from atlas.store import open_db

    options = _options(args)
    model, device, dtype, method = args["model"], args["device"], args["dtype"], args["method"]
    tasks, set_name, db = args["task"], args["set_name"], args["db"]
    engine = open_db(db, create=False)
    try:
        stored = set_owner(engine, display_name(model), resolve_dtype(dtype, resolve_device(device)))
        targets = [find_set(engine, stored, task=t, method=method, name=set_name)
                   for t in (tasks or [None])]
        with console.status(f"loading {model}"):
            loaded = load_model(model, device=device, dtype=dtype)
        columns = [SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn()]
        experiment = Experiment(engine, loaded, options)  # each task prepared once for all sets
        for target in targets:
            if not target["size"]:  # LAPE assigns some tasks no neuron
                err_console.print(f"[yellow]warning:[/] set {escape(target['name'])} is empty: "
                                  "nothing to intervene on, skipped")
                continue
            with Progress(*columns, console=console, transient=True) as progress:
                results = experiment.run(target, SpinnerReporter(progress))
            console.print(rich_table(results, title=f"{target['name']} × {options.factor} · "
                                                    f"{options.metric}"))
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
                eval_tasks: list[str] = typer.Option(
                    ["all"], "--eval-task", help="Tasks to evaluate ('all': every task with a set)."),
                examples: int = typer.Option(None, help="Held-out examples per evaluation task "
                                                        "(default: the whole held-out half)."),
                metric: str = typer.Option("label_likelihood",
                                           help="label_likelihood, label_prob, exact_match or "
                                                "reference_em."),
                preset: str = typer.Option(None, help="'reference': evaluate as the released "
                                                      "code (see README)."),
                split: str = typer.Option("stratified", help="stratified or file."),
                demos: str = typer.Option("fixed", help="fixed (same seeded demonstrations from the "
                                                        "scoring half, cached) or per_query."),
                shots: int = typer.Option(5), seed: int = typer.Option(0),
                control_seed: int = typer.Option(0, help="Seed of the first random control set."),
                controls: int = typer.Option(3, help="Random control sets (seeds control-seed, "
                                                     "control-seed + 1, ...); 20 or more give "
                                                     "the report's set-level test power. "
                                                     "Stored controls are reused."),
                controls_on: str = typer.Option("all", "--controls-on",
                                                help="all: controls on every evaluated task; own: "
                                                     "only on the set's own task (cheaper)."),
                control: bool = typer.Option(True, help="Also evaluate a random control set."),
                batch_size: int = typer.Option(8), device: str = typer.Option("auto"),
                dtype: str = typer.Option("auto"),
                sni_dir: list[str] = SniDirOption,
                db: str = DbOption) -> None:
        if not task and not set_name:
            raise AtlasError("give --task TASK (its stored set) or --set NAME")
        _experiment(dict(locals()))

    command.__name__, command.__doc__ = name, doc
    return command


ablate = _intervention_command(
    "ablate", 0.0,
    "Scale a task's stored neuron set and measure accuracy on every task, with a random control.")
amplify = _intervention_command("amplify", 2.0, "Like ablate, with a default factor of 2 (amplification).")


ConfigOption = typer.Option(None, "--config", help="Evaluation configuration (a prefix of its "
                                                     "hash) when the model has several.")


def report(model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"),
           method: str = typer.Option("cgvst"), factor: float = typer.Option(0.0),
           metric: str = typer.Option("label_likelihood"), config: str = ConfigOption,
           format: str = typer.Option("markdown", "--format", "-f", help="markdown, csv or json."),
           db: str = DbOption) -> None:
    """Task × task matrix of relative accuracy change, random controls and specificity indices."""
    from atlas.intervene.report import build_report, render
    from atlas.store import open_db

    engine = open_db(db, read_only=True)
    try:
        sys.stdout.write(render(build_report(engine, model, method, factor, metric, config), format))
    finally:
        engine.dispose()
