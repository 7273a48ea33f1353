"""Evaluations: accuracy of a model on a task, unmodified or with a neuron set scaled.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

EFFECTS_SQL = """
        SELECT m.name AS model, s.name AS set_name, ts.name AS set_task, s.method,
               e.factor, e.is_control, et.name AS eval_task, e.metric, e.n, e.seed,
               b.value AS baseline, e.value,
               e.value - b.value AS delta,
               (e.value - b.value) / nullif(b.value, 0) AS rel_change
        FROM evaluations e
        JOIN models m USING (model_id)
        JOIN neuron_sets s ON s.set_id = e.set_id
        LEFT JOIN tasks ts ON ts.task_id = s.task_id
        JOIN tasks et ON et.task_id = e.eval_task_id
        JOIN evaluations b ON b.model_id = e.model_id AND b.set_id IS NULL
             AND b.eval_task_id = e.eval_task_id AND b.metric = e.metric
             AND b.params_key = e.params_key"""


def upgrade() -> None:
    op.execute("CREATE SEQUENCE seq_evaluations START 1")
    op.execute("""
        CREATE TABLE evaluations (
            eval_id      INTEGER PRIMARY KEY DEFAULT nextval('seq_evaluations'),
            model_id     INTEGER NOT NULL,
            set_id       INTEGER,
            factor       DOUBLE NOT NULL,
            is_control   BOOLEAN NOT NULL,
            control_seed INTEGER,
            eval_task_id INTEGER NOT NULL,
            metric       VARCHAR NOT NULL,
            value        DOUBLE NOT NULL,
            n            INTEGER NOT NULL,
            seed         INTEGER NOT NULL,
            params       JSON,
            params_key   VARCHAR NOT NULL,
            created_at   TIMESTAMP DEFAULT current_timestamp
        )""")
    op.execute(f"CREATE VIEW evaluation_effects AS {EFFECTS_SQL}")


def downgrade() -> None:
    op.execute("DROP VIEW evaluation_effects")
    op.execute("DROP TABLE evaluations")
    op.execute("DROP SEQUENCE seq_evaluations")
