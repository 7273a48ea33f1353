"""The atlas store: DuckDB tables (see README) through SQLAlchemy, migrated by Alembic."""

from atlas.store.db import DEFAULT_DB, db_path, migrate, open_db, sandbox_connection

__all__ = ["DEFAULT_DB", "db_path", "migrate", "open_db", "sandbox_connection"]
