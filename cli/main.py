"""The `atlas` command line: ingest, query, intervene."""

from __future__ import annotations

import typer

from cli.common import AtlasGroup
from cli.db import db_app
from cli.evidence import describe, neurons
from cli.ingest import ingest, select_cmd, split_cmd
from cli.intervene import ablate, amplify, report
from cli.live import activations, try_set
from cli.plot import plot_app
from cli.query import compare, export, import_cmd, overlap, specificity_cmd, sql
from cli.serve import serve

app = typer.Typer(
    cls=AtlasGroup,
    help="An atlas of task-specific neurons in language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
app.command()(ingest)
app.command("select")(select_cmd)
app.command("split")(split_cmd)
app.command()(sql)
app.command()(overlap)
app.command("specificity")(specificity_cmd)
app.command()(compare)
app.command("import")(import_cmd)
app.command()(export)
app.command()(ablate)
app.command()(amplify)
app.command()(report)
app.command()(serve)
app.command()(describe)
app.command()(neurons)
app.command("try")(try_set)
app.command()(activations)
app.add_typer(db_app, name="db")
app.add_typer(plot_app, name="plot")

if __name__ == "__main__":
    app()
