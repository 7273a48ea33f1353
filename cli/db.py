"""`atlas db ...`: schema migrations."""

from __future__ import annotations

import typer

from atlas.store.db import connect, current_revision, head_revision, migrate
from cli.common import AtlasGroup, DbOption, console

db_app = typer.Typer(cls=AtlasGroup, help="Database schema: upgrade, downgrade, current.",
                     no_args_is_help=True)


@db_app.command()
def upgrade(revision: str = typer.Argument("head"), db: str = DbOption) -> None:
    """Apply migrations up to REVISION (default: head)."""
    engine = connect(db)
    migrate(engine, revision)
    console.print(f"database at revision {current_revision(engine)}")
    engine.dispose()


@db_app.command()
def downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. -1 or base."),
              db: str = DbOption) -> None:
    """Revert migrations down to REVISION."""
    engine = connect(db)
    migrate(engine, revision, down=True)
    console.print(f"database at revision {current_revision(engine) or 'base'}")
    engine.dispose()


@db_app.command()
def current(db: str = DbOption) -> None:
    """Show the database's revision and the newest one."""
    engine = connect(db)
    console.print(f"current: {current_revision(engine) or 'base'}  head: {head_revision()}")
    engine.dispose()
