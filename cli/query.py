"""Query commands: sql, overlap, specificity, compare, import, export."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from atlas import query as q
from atlas.errors import AtlasError
from cli.common import DbOption, arrow_rich_table, console, err_console, rich_table

ModelOption = typer.Option(..., "--model", "-m", help="Model name as stored (see models table).")
MethodOption = typer.Option("cgvst", "--method", help="Scoring method of the sets.")


def open_db(db: str | None, read_only: bool = False):
    from atlas.store.db import open_db as open_store

    return open_store(db, read_only=read_only)


def _emit(rows: list[dict], fmt: str, output: str | None, title: str) -> None:
    if fmt == "table":
        console.print(rich_table(rows, title=title))
        return
    import pyarrow as pa

    from atlas.query.sql import write_table

    text = write_table(pa.Table.from_pylist(rows), fmt, output)
    if text is not None:
        sys.stdout.write(text)


def sql(query: str = typer.Argument(..., help="One read-only SQL statement."),
        format: str = typer.Option("table", "--format", "-f", help="table, csv, json or parquet."),
        output: str = typer.Option(None, "--output", "-o", help="Write to this file."),
        db: str = DbOption) -> None:
    """Run read-only SQL over the atlas tables and views."""
    from atlas.query.sql import write_table

    table = q.run_sql(query, db)
    if format == "table":
        console.print(arrow_rich_table(table))
        return
    text = write_table(table, format, output)
    if text is not None:
        sys.stdout.write(text)


def overlap(model: str = ModelOption, method: str = MethodOption,
            measure: str = typer.Option("jaccard", help="jaccard, overlap_coef or n_shared."),
            versus: list[str] = typer.Option(
                None, "--versus", help="Instead: per task, the overlap of its --method set with "
                "its set from this method (repeatable)."),
            format: str = typer.Option("table", "--format", "-f"),
            output: str = typer.Option(None, "--output", "-o"), db: str = DbOption) -> None:
    """The task × task overlap matrix of a model's neuron sets, or with --versus, per task, how
    much different methods' sets agree."""
    engine = open_db(db, read_only=True)
    if versus:
        _emit(q.method_overlap(engine, model, method, versus, measure), format, output,
              f"{model} · {method} versus {', '.join(versus)} · {measure}")
        return
    matrix = q.overlap_matrix(engine, model, method, measure)
    _emit(matrix.as_rows(), format, output, f"{model} · {method} · {measure}")


def specificity_cmd(model: str = ModelOption, method: str = MethodOption,
                    neurons: int = typer.Option(0, help="Also list the N lowest-entropy neurons."),
                    format: str = typer.Option("table", "--format", "-f"),
                    output: str = typer.Option(None, "--output", "-o"), db: str = DbOption) -> None:
    """Per task: set size, unique neurons, specificity; per neuron: entropy across tasks."""
    engine = open_db(db, read_only=True)
    _emit(q.specificity(engine, model, method), format, output, f"{model} · {method} specificity")
    if neurons:
        _emit(q.neuron_entropy(engine, model, method, neurons), "table", None,
              "lowest-entropy neurons")


def compare(model: list[str] = typer.Option(..., "--model", "-m", help="Two model names."),
            method: str = MethodOption, format: str = typer.Option("table", "--format", "-f"),
            output: str = typer.Option(None, "--output", "-o"), db: str = DbOption) -> None:
    """Compare two models' task sets: depth profiles, index overlap when shapes match, and
    whether they find the same tasks similar (Mantel test of their Jaccard matrices)."""
    if len(model) != 2:
        raise typer.BadParameter("give --model twice")
    engine = open_db(db, read_only=True)
    _emit(q.compare_models(engine, model[0], model[1], method), format, output,
          f"{model[0]} vs {model[1]} · {method}")
    try:
        agreement = q.task_similarity_agreement(engine, model[0], model[1], method)
    except AtlasError as err:
        err_console.print(f"task-similarity agreement not computed: {escape(str(err))}")
        return
    err_console.print(
        f"task-similarity agreement over {agreement['n_tasks']} shared tasks: Mantel r = "
        f"{agreement['r']:+.3f}, p = {agreement['p']:.3g} ({agreement['n_permutations']} "
        f"{'' if agreement['exact'] else 'random '}permutations)")


def import_cmd(path: str = typer.Argument(..., help="torch.save file of per-layer indices."),
               model: str = ModelOption,
               task: list[str] = typer.Option(..., "--task", "-t", help="Task name(s) of the sets."),
               format: str = typer.Option("cgvst", "--format", help="cgvst or lape."),
               layers: int = typer.Option(None, "--layers", help="Layers (if the model is new)."),
               d_mlp: int = typer.Option(None, "--d-mlp", help="Neurons per layer (if new)."),
               db: str = DbOption) -> None:
    """Import published neuron sets (e.g. the paper's released masks)."""
    from atlas.store.importer import import_sets

    engine = open_db(db)
    try:
        names = [t for group in task for t in group.split(",") if t]
        done = import_sets(engine, path, model=model, tasks=names, fmt=format, n_layers=layers,
                           d_mlp=d_mlp)
    finally:
        engine.dispose()
    console.print(rich_table(done, title="imported sets"))


def export(folder: str = typer.Argument(..., help="Output folder."), db: str = DbOption) -> None:
    """Export every table and view as Parquet, one file each."""
    for path in q.export_parquet(folder, db):
        console.print(str(path))
