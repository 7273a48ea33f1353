"""`atlas plot`: every figure as a PNG file (overlap, layers, compare, report)."""

from __future__ import annotations

import typer

from atlas import query as q
from atlas.models.names import DEFAULT_MODEL
from cli.common import AtlasGroup, DbOption, console
from cli.intervene import ConfigOption
from cli.query import MethodOption, ModelOption, open_db

plot_app = typer.Typer(cls=AtlasGroup, help="Figures as PNG files.", no_args_is_help=True)


@plot_app.command("overlap")
def plot_overlap_cmd(model: str = ModelOption, method: str = MethodOption,
                     measure: str = typer.Option("jaccard"),
                     output: str = typer.Option(..., "--output", "-o"), db: str = DbOption) -> None:
    """Heatmap of the overlap matrix."""
    from atlas.query.plots import plot_overlap

    engine = open_db(db, read_only=True)
    console.print(str(plot_overlap(q.overlap_matrix(engine, model, method, measure), output)))


@plot_app.command("layers")
def plot_layers_cmd(model: str = ModelOption, method: str = MethodOption,
                    output: str = typer.Option(..., "--output", "-o"), db: str = DbOption) -> None:
    """Per-layer distribution of each task's neurons."""
    from atlas.query.core import resolve_model
    from atlas.query.plots import plot_layers

    engine = open_db(db, read_only=True)
    info = resolve_model(engine, model)
    q.overlap_matrix(engine, model, method)  # validates model and method
    prof = q.depth_profile(engine, model, method)
    console.print(str(plot_layers(prof, info["n_layers"], f"{model} · {method}", output)))


@plot_app.command("compare")
def plot_compare_cmd(model: list[str] = typer.Option(..., "--model", "-m"),
                     method: str = MethodOption, output: str = typer.Option(..., "--output", "-o"),
                     db: str = DbOption) -> None:
    """Relative-depth distributions of two models' task sets."""
    from atlas.query.plots import plot_compare

    if len(model) != 2:
        raise typer.BadParameter("give --model twice")
    engine = open_db(db, read_only=True)
    for name in model:
        q.overlap_matrix(engine, name, method)
    profiles = [q.depth_profile(engine, name, method) for name in model]
    console.print(str(plot_compare(profiles[0], profiles[1], (model[0], model[1]), output)))


@plot_app.command("report")
def plot_report(model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"),
                method: str = typer.Option("cgvst"), factor: float = typer.Option(0.0),
                metric: str = typer.Option("label_likelihood"), config: str = ConfigOption,
                output: str = typer.Option(..., "--output", "-o"), db: str = DbOption) -> None:
    """Heatmap of the intervention report."""
    from atlas.intervene.report import build_report, plot

    engine = open_db(db, read_only=True)
    try:
        console.print(str(plot(build_report(engine, model, method, factor, metric, config), output)))
    finally:
        engine.dispose()
