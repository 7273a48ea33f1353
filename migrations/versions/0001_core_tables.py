"""Core tables: models, tasks, runs, neuron_scores, neuron_sets, members, checkpoints.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = ["run_checkpoints", "neuron_set_members", "neuron_sets", "neuron_scores", "runs",
          "tasks", "models"]


def upgrade() -> None:
    for table in ("models", "tasks", "runs", "neuron_sets"):
        op.execute(f"CREATE SEQUENCE seq_{table} START 1")
    op.execute("""
        CREATE TABLE models (
            model_id   INTEGER PRIMARY KEY DEFAULT nextval('seq_models'),
            name       VARCHAR NOT NULL,
            family     VARCHAR,
            n_layers   INTEGER NOT NULL,
            d_mlp      INTEGER NOT NULL,
            revision   VARCHAR NOT NULL,
            dtype      VARCHAR NOT NULL,
            created_at TIMESTAMP DEFAULT current_timestamp,
            UNIQUE (name, revision, dtype)
        )""")
    op.execute("""
        CREATE TABLE tasks (
            task_id     INTEGER PRIMARY KEY DEFAULT nextval('seq_tasks'),
            name        VARCHAR NOT NULL,
            source      VARCHAR,
            n_instances INTEGER,
            data_hash   VARCHAR NOT NULL,
            UNIQUE (name, data_hash)
        )""")
    op.execute("""
        CREATE TABLE runs (
            run_id      INTEGER PRIMARY KEY DEFAULT nextval('seq_runs'),
            model_id    INTEGER NOT NULL,
            task_id     INTEGER NOT NULL,
            method      VARCHAR NOT NULL,
            status      VARCHAR NOT NULL CHECK (status IN ('running', 'complete', 'failed')),
            params      JSON,
            params_key  VARCHAR NOT NULL,
            n_examples  INTEGER DEFAULT 0,
            n_tokens    BIGINT DEFAULT 0,
            n_skipped   INTEGER DEFAULT 0,
            error       VARCHAR,
            started_at  TIMESTAMP DEFAULT current_timestamp,
            finished_at TIMESTAMP
        )""")
    op.execute("""
        CREATE TABLE neuron_scores (
            run_id INTEGER NOT NULL,
            layer  SMALLINT NOT NULL,
            neuron INTEGER NOT NULL,
            score  FLOAT NOT NULL
        )""")
    op.execute("""
        CREATE TABLE neuron_sets (
            set_id     INTEGER PRIMARY KEY DEFAULT nextval('seq_neuron_sets'),
            name       VARCHAR NOT NULL UNIQUE,
            model_id   INTEGER NOT NULL,
            task_id    INTEGER,
            run_id     INTEGER,
            rule       VARCHAR NOT NULL,
            size       INTEGER NOT NULL,
            created_at TIMESTAMP DEFAULT current_timestamp
        )""")
    op.execute("""
        CREATE TABLE neuron_set_members (
            set_id INTEGER NOT NULL,
            layer  SMALLINT NOT NULL,
            neuron INTEGER NOT NULL
        )""")
    op.execute("""
        CREATE TABLE run_checkpoints (
            run_id     INTEGER PRIMARY KEY,
            chunk_size INTEGER NOT NULL,
            n_done     INTEGER NOT NULL,
            n_tokens   BIGINT NOT NULL,
            sums       BLOB NOT NULL,
            updated_at TIMESTAMP DEFAULT current_timestamp
        )""")


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TABLE {table}")
    for table in ("models", "tasks", "runs", "neuron_sets"):
        op.execute(f"DROP SEQUENCE seq_{table}")
