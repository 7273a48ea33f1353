"""Open an atlas database: DuckDB through SQLAlchemy (duckdb-engine), migrated by Alembic."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
from alembic import command
from alembic.config import Config
from alembic.ddl.impl import DefaultImpl
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, exc
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from atlas.errors import AtlasError

DEFAULT_DB = "atlas.duckdb"


class DuckDBImpl(DefaultImpl):
    """Alembic's implementation for the ``duckdb`` dialect (transactional DDL)."""

    __dialect__ = "duckdb"
    transactional_ddl = True


def db_path(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("ATLAS_DB") or DEFAULT_DB)


def alembic_config() -> Config:
    import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _lock_error(path: Path, err: Exception) -> AtlasError:
    text = str(err).splitlines()[0]
    return AtlasError(
        f"database {path} is in use by another process ({text}); "
        "wait for it to finish or use another --db"
    )


def connect(path: str | Path | None = None, *, read_only: bool = False) -> Engine:
    """An engine holding one DuckDB connection (and the file lock while it is open)."""
    path = db_path(path)
    if read_only and not path.exists():
        raise AtlasError(f"no atlas database at {path}; run `atlas ingest` first or pass --db")
    engine = create_engine(
        f"duckdb:///{path}",
        connect_args={"read_only": read_only},
        poolclass=StaticPool,
    )
    try:
        with engine.connect():
            pass
    except (exc.OperationalError, exc.DBAPIError, duckdb.IOException, duckdb.ConnectionException) as err:
        engine.dispose()
        raise _lock_error(path, err) from err
    return engine


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine, revision: str = "head", *, down: bool = False) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        if down:
            command.downgrade(cfg, revision)
        else:
            command.upgrade(cfg, revision)


def open_db(path: str | Path | None = None, *, read_only: bool = False) -> Engine:
    """Open (creating and upgrading as needed) the database at ``path``."""
    path = db_path(path)
    if read_only:
        engine = connect(path, read_only=True)
        if current_revision(engine) == head_revision():
            return engine
        engine.dispose()
        migrate_engine = connect(path)
        migrate(migrate_engine)
        migrate_engine.dispose()
        return connect(path, read_only=True)
    engine = connect(path)
    if current_revision(engine) != head_revision():
        migrate(engine)
    return engine
