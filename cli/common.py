"""Shared CLI plumbing: one-line errors, options, rich output."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer._click.exceptions import UsageError
from typer.core import TyperGroup
from typer.core import _click as click

from atlas.errors import AtlasError

if TYPE_CHECKING:
    import pyarrow as pa

# Piped or logged output keeps whole table rows (a terminal sets its own width). Standard output
# prints names, paths and values as written: no rich markup (a model folder may be "x[bold]").
console = Console(width=None if sys.stdout.isatty() else 160, markup=False)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


class AtlasClickError(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        err_console.print(f"[bold red]error:[/] {escape(self.format_message())}", highlight=False,
                          soft_wrap=True)


def _one_line(err: UsageError) -> AtlasClickError:
    """A usage error as one line naming the command and the fix (no usage block)."""
    command = err.ctx.command_path if err.ctx else "atlas"
    message = " ".join(err.format_message().split())
    return AtlasClickError(f"{message} (see `{command} --help`)")


class AtlasGroup(TyperGroup):
    """Turns AtlasError into a one-line message with exit code 2, and Ctrl-C into exit 130."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as err:
            raise _one_line(err) from err

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UsageError as err:  # a subcommand's bad option or value
            raise _one_line(err) from err
        except AtlasError as err:
            raise AtlasClickError(str(err)) from err
        except KeyboardInterrupt:
            err_console.print("interrupted: partial work is checkpointed; re-run the same "
                              "command to resume")
            sys.exit(130)


DbOption = typer.Option(None, "--db", help="Database file (default: $ATLAS_DB or ./atlas.duckdb).")
SniDirOption = typer.Option(None, "--sni-dir", help="Folder(s) of SNI task files, searched in "
                                                    "order (repeatable; default: $ATLAS_SNI_DIR).")


def sni_path(folders: list[str] | None) -> str | None:
    """Several --sni-dir folders as one search path."""
    return os.pathsep.join(folders) if folders else None


def rich_table(rows: list[dict], title: str | None = None, floats: int = 4) -> Table:
    return _table(list(rows[0]) if rows else [], [list(r.values()) for r in rows], title, floats)


def arrow_rich_table(data: pa.Table, floats: int = 4) -> Table:
    """A query result: every column by position (names may repeat), the header also when no
    row came back."""
    return _table(data.column_names, [list(r) for r in zip(*(c.to_pylist() for c in data.columns))],
                  None, floats)


def _table(columns: list[str], rows: list[list], title: str | None, floats: int) -> Table:
    table = Table(title=title, header_style="bold")
    for k, col in enumerate(columns):
        numeric = bool(rows) and isinstance(rows[0][k], (int, float))
        table.add_column(Text(str(col)), justify="right" if numeric else "left", overflow="fold")
    for row in rows:  # values as plain text: '[inf]' or '[bold]' in a cell is data, not markup
        table.add_row(*[
            Text(f"{v:.{floats}g}" if isinstance(v, float) else ("" if v is None else str(v)))
            for v in row
        ])
    return table
