"""Open an atlas database: DuckDB through SQLAlchemy (duckdb-engine), migrated by Alembic.

Concurrency: an engine holds no connection between transactions (``NullPool``), so a writer
(ingest, ablate) locks the file only while it commits a checkpoint, a run or an evaluation, and
readers (sql, queries, plots, export, serve) open it between those commits. A connection that
finds the file locked waits, with backoff, up to ``$ATLAS_LOCK_WAIT`` seconds (default 60), then
fails with a one-line message. A writer that waits holds a shared ``flock`` on ``<db>.wait``
meanwhile (:func:`writer_waiting`), so that a server under load lets the file go.

Read-only engines are a sandbox: a read-only DuckDB connection with external access disabled
(no file, URL or extension reads and writes), extension autoload and autoinstall off, and the
configuration locked. They never migrate: an older schema or a database that is not an atlas
database is refused and left untouched.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from atlas.errors import Unavailable, first_line

if TYPE_CHECKING:  # SQLAlchemy is imported where an engine is made (quick paths skip it)
    from sqlalchemy.engine import Engine

DEFAULT_DB = "atlas.duckdb"
# The newest migration; a test checks it against Alembic's head, so quick read-only paths can
# check a database's schema without importing Alembic.
SCHEMA_HEAD = "0007"
SANDBOX = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}


def db_path(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("ATLAS_DB") or DEFAULT_DB)


def lock_wait() -> float:
    return float(os.environ.get("ATLAS_LOCK_WAIT", "60"))


_ALEMBIC_READY: list[bool] = []


def _alembic():
    """Import Alembic (only for commands that check or change the schema) and register its
    implementation for the ``duckdb`` dialect (transactional DDL)."""
    import alembic.ddl.impl

    if not _ALEMBIC_READY:
        class DuckDBImpl(alembic.ddl.impl.DefaultImpl):
            __dialect__ = "duckdb"
            transactional_ddl = True

        _ALEMBIC_READY.append(True)
    return alembic


def alembic_config():
    _alembic()
    from alembic.config import Config

    import migrations

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _wait_for_lock(path: Path, open_connection, *, writer: bool = False):
    """``open_connection()``, retried while another process holds the file, then one line.
    A waiting writer says so (:func:`writer_waiting`), so that a server lets the file go."""
    started, delay = time.monotonic(), 0.05
    waiting = None
    try:
        while True:
            try:
                return open_connection()
            except (duckdb.IOException, duckdb.ConnectionException) as err:
                message = first_line(err)
                if "lock" not in message.lower():
                    raise Unavailable(f"cannot open {path} as a DuckDB database ({message}); "
                                      "pass the --db of an atlas database") from err
                waited = time.monotonic() - started
                if waited >= lock_wait():
                    raise Unavailable(
                        f"database {path} is in use by another process ({message}); waited "
                        f"{waited:.0f} s: wait for it to finish, raise $ATLAS_LOCK_WAIT, or use "
                        "another --db") from err
                if writer and waiting is None:
                    waiting = _announce_writer(path)
                time.sleep(delay)
                delay = min(delay * 2, 0.2 if writer else 1.0)
    finally:
        if waiting is not None:
            _withdraw_writer(path, waiting)


def _wait_path(path: Path) -> Path:
    return path.with_name(path.name + ".wait")


def _announce_writer(path: Path):
    """Hold a shared ``flock`` on ``<db>.wait`` while this writer waits for the database."""
    try:
        import fcntl

        handle = open(_wait_path(path), "a")  # noqa: SIM115 (held until the writer gets in)
        fcntl.flock(handle, fcntl.LOCK_SH)
        return handle
    except (ImportError, OSError):  # no flock here, or a folder this writer cannot write
        return None


def _withdraw_writer(path: Path, handle) -> None:
    """Release the announcement; the last writer out removes the empty file."""
    import fcntl

    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _wait_path(path).unlink(missing_ok=True)
    except OSError:  # another writer still waits
        pass
    finally:
        handle.close()


def writer_waiting(path: Path) -> bool:
    """Whether an atlas writer is waiting for the database at ``path`` (read without writing)."""
    try:
        import fcntl

        fd = os.open(_wait_path(path), os.O_RDONLY)
    except (ImportError, OSError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _waiting_connect(path: Path, *, writer: bool):
    """A ``do_connect`` hook that waits for the file lock."""

    def connect(dialect, conn_rec, cargs, cparams):
        return _wait_for_lock(path, lambda: dialect.connect(*cargs, **cparams), writer=writer)

    return connect


def sandbox_connection(path: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """A raw read-only, sandboxed DuckDB connection to an atlas database at this schema (the
    quick path for SQL; checked like :func:`open_db` with ``read_only``)."""
    path = db_path(path)
    if not path.exists():
        raise Unavailable(f"no atlas database at {path}; run `atlas ingest` first or pass --db")
    con = _wait_for_lock(path, lambda: duckdb.connect(str(path), read_only=True,
                                                      config=dict(SANDBOX)))
    try:
        _refuse_unless_current(path, lambda sql: con.execute(sql).fetchall())
    except BaseException:
        con.close()
        raise
    return con


def connect(path: str | Path | None = None, *, read_only: bool = False,
            threads: int | None = None) -> Engine:
    """An engine that opens a DuckDB connection per transaction (sandboxed when read-only);
    ``threads`` caps DuckDB's threads per query (default: one per core)."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    path = db_path(path)
    if read_only and not path.exists():
        raise Unavailable(f"no atlas database at {path}; run `atlas ingest` first or pass --db")
    args: dict = {"read_only": read_only}
    if read_only:
        args["config"] = dict(SANDBOX)
    if threads:
        args.setdefault("config", {})["threads"] = threads
    engine = create_engine(f"duckdb:///{path}", connect_args=args, poolclass=NullPool)
    event.listen(engine, "do_connect", _waiting_connect(path, writer=not read_only))
    with engine.connect():
        pass
    return engine


def current_revision(engine: Engine) -> str | None:
    _alembic()
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        tables = {r[0] for r in conn.exec_driver_sql(
            "SELECT table_name FROM information_schema.tables").fetchall()}
        if "alembic_version" not in tables:
            return None
        return MigrationContext.configure(conn).get_current_revision()


def _n_tables(engine: Engine) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM information_schema.tables")).scalar_one()


def migrate(engine: Engine, revision: str = "head", *, down: bool = False) -> None:
    """Upgrade (or with ``down`` downgrade) to ``revision``; a database at a revision this atlas
    does not know (a newer atlas's) or an unknown target is refused in one line."""
    from alembic import command
    from alembic.util import CommandError

    cfg = alembic_config()
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            if down:
                command.downgrade(cfg, revision)
            else:
                command.upgrade(cfg, revision)
    except CommandError as err:
        raise Unavailable(f"cannot migrate {engine.url.database} to {revision}: {first_line(err)}; "
                          f"this atlas knows revisions up to {SCHEMA_HEAD} (a newer database "
                          "needs a newer atlas)") from err


def refuse_foreign(engine: Engine, path: Path) -> None:
    """Refuse a DuckDB file that holds tables but is not an atlas database (left untouched)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        tables = {r[0] for r in conn.execute(text(
            "SELECT table_name FROM information_schema.tables"))}
    if tables and "alembic_version" not in tables:  # downgraded to base keeps that table
        check_schema(engine, path, None)


def check_schema(engine: Engine, path: Path, revision: str | None) -> None:
    """Refuse a database that is not an atlas database or not at this atlas's schema."""
    _refuse_schema(path, revision, bool(_n_tables(engine)), head_revision())


def _refuse_schema(path: Path, revision: str | None, has_tables: bool, head: str) -> None:
    if revision is None and has_tables:
        raise Unavailable(f"{path} is not an atlas database (no alembic_version table); "
                         "it was left untouched: pass the --db of an atlas database")
    if revision != head:
        raise Unavailable(f"database {path} is at schema revision {revision}, this atlas needs "
                         f"{head}; run `atlas db upgrade --db {path}` (read-only commands never "
                         "migrate)")


def _refuse_unless_current(path: Path, fetch) -> None:
    """The read-only schema check with plain SQL (no Alembic); ``fetch(sql)`` gives row tuples."""
    tables = {r[0] for r in fetch("SELECT table_name FROM information_schema.tables")}
    revision = (fetch("SELECT version_num FROM alembic_version")[0][0]
                if "alembic_version" in tables else None)
    _refuse_schema(path, revision, bool(tables), SCHEMA_HEAD)


def check_read_schema(engine: Engine, path: Path) -> None:
    """The read-only schema check on an engine: quick enough for every request."""
    with engine.connect() as conn:
        _refuse_unless_current(path, lambda sql: conn.exec_driver_sql(sql).fetchall())


def open_db(path: str | Path | None = None, *, read_only: bool = False,
            create: bool = True) -> Engine:
    """Open the database at ``path``: read-only (sandboxed, never migrated), or for writing
    (upgraded as needed, and created unless ``create`` is false; a foreign database is
    refused)."""
    path = db_path(path)
    if not create and not path.exists():
        raise Unavailable(f"no atlas database at {path}; run `atlas ingest` first or pass --db")
    engine = connect(path, read_only=read_only)
    try:
        if read_only:
            check_read_schema(engine, path)
            return engine
        revision = current_revision(engine)
        if revision is None and _n_tables(engine):
            check_schema(engine, path, revision)
        elif revision != head_revision():
            migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine
