"""The `atlas` command line: ingest, query, intervene."""

from __future__ import annotations

import typer

from cli.common import AtlasGroup
from cli.db import db_app
from cli.ingest import ingest

app = typer.Typer(
    cls=AtlasGroup,
    help="An atlas of task-specific neurons in language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
app.command()(ingest)
app.add_typer(db_app, name="db")

if __name__ == "__main__":
    app()
