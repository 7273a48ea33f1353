"""Alembic environment: runs on the connection handed over by atlas.store (which registers
the DuckDB implementation before any migration runs)."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
