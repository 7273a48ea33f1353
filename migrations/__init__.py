"""Alembic migrations of the atlas DuckDB schema (applied on open, or by `atlas db upgrade`)."""
