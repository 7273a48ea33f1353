"""`atlas db ...`: schema migrations."""

from __future__ import annotations

import typer

from atlas.errors import AtlasError
from atlas.store import db as store
from cli.common import AtlasGroup, DbOption, console

db_app = typer.Typer(cls=AtlasGroup, help="Schema and snapshots: upgrade, downgrade, current, "
                                           "snapshot, restore.",
                     no_args_is_help=True)


@db_app.command()
def upgrade(revision: str = typer.Argument("head"), db: str = DbOption) -> None:
    """Apply migrations up to REVISION (default: head)."""
    engine = store.connect(db)
    try:
        store.refuse_foreign(engine, store.db_path(db))
        store.migrate(engine, revision)
        console.print(f"database at revision {store.current_revision(engine)}")
    finally:
        engine.dispose()


@db_app.command(context_settings={"ignore_unknown_options": True})  # "-1" is a revision
def downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. -1 or base."),
              db: str = DbOption) -> None:
    """Revert migrations down to REVISION."""
    engine = _existing(db)
    try:
        store.refuse_foreign(engine, store.db_path(db))
        store.migrate(engine, revision, down=True)
        console.print(f"database at revision {store.current_revision(engine) or 'base'}")
    finally:
        engine.dispose()


def _existing(db: str | None, read_only: bool = False):
    """An engine on an existing database file (never created here)."""
    path = store.db_path(db)
    if not path.exists():
        raise AtlasError(f"no atlas database at {path}; pass the --db of an atlas database")
    return store.connect(path, read_only=read_only)


@db_app.command()
def current(db: str = DbOption) -> None:
    """Show the database's revision and the newest one (read-only)."""
    engine = _existing(db, read_only=True)
    try:
        console.print(f"current: {store.current_revision(engine) or 'base'}  "
                      f"head: {store.head_revision()}")
    finally:
        engine.dispose()


@db_app.command()
def snapshot(folder: str = typer.Argument(..., help="Snapshot folder (created or updated)."),
             db: str = DbOption) -> None:
    """Write the finished part of the atlas as Parquet files (read-only on the database); files
    of what an earlier snapshot already holds stay byte for byte the same."""
    from atlas.store.snapshot import take_snapshot

    done = take_snapshot(folder, db)
    rows = ", ".join(f"{name} {n}" for name, n in done["rows"].items())
    console.print(f"snapshot {folder} (schema {done['schema']}): {rows}; "
                  f"{len(done['written'])} files written")


@db_app.command()
def restore(folder: str = typer.Argument(..., help="A folder `atlas db snapshot` wrote."),
            db: str = DbOption) -> None:
    """Build a new atlas database from a snapshot (an existing --db is refused)."""
    from atlas.store.snapshot import restore_snapshot

    counts = restore_snapshot(folder, db)
    console.print(f"restored {store.db_path(db)}: "
                  + ", ".join(f"{name} {n}" for name, n in counts.items()))
