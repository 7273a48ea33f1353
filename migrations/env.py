"""Alembic environment: runs on the connection handed over by atlas.store."""

from alembic import context

import atlas.store.db  # noqa: F401  (registers the DuckDB Alembic implementation)

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
