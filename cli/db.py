"""`atlas db ...`: schema migrations."""

from __future__ import annotations

import typer

from atlas.store import db as store
from cli.common import AtlasGroup, DbOption, console

db_app = typer.Typer(cls=AtlasGroup, help="Database schema: upgrade, downgrade, current.",
                     no_args_is_help=True)


@db_app.command()
def upgrade(revision: str = typer.Argument("head"), db: str = DbOption) -> None:
    """Apply migrations up to REVISION (default: head)."""
    engine = store.connect(db)
    store.migrate(engine, revision)
    console.print(f"database at revision {store.current_revision(engine)}")
    engine.dispose()


@db_app.command()
def downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. -1 or base."),
              db: str = DbOption) -> None:
    """Revert migrations down to REVISION."""
    engine = store.connect(db)
    store.migrate(engine, revision, down=True)
    console.print(f"database at revision {store.current_revision(engine) or 'base'}")
    engine.dispose()


@db_app.command()
def current(db: str = DbOption) -> None:
    """Show the database's revision and the newest one."""
    engine = store.connect(db)
    console.print(f"current: {store.current_revision(engine) or 'base'}  head: {store.head_revision()}")
    engine.dispose()
