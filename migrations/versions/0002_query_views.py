"""Query views: task_sets, set_sizes, set_overlaps, unique_neurons, layer_counts.

Also adds neuron_sets.method (the scoring method of the set; 'cgvst' etc. for imported sets).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

VIEWS = ["layer_counts", "unique_neurons", "set_overlaps", "set_sizes", "task_sets"]
# The current set of each (model, task, method) is the newest one (task_sets).
VIEW_SQL = {
    "task_sets": """
        SELECT s.set_id, s.name, s.model_id, m.name AS model, s.task_id, t.name AS task,
               split_part(t.name, '_', 1) AS task_short, s.method, s.rule, s.size, s.run_id,
               m.n_layers, m.d_mlp
        FROM neuron_sets s
        JOIN models m USING (model_id)
        LEFT JOIN tasks t USING (task_id)
        QUALIFY row_number() OVER (PARTITION BY s.model_id, s.task_id, s.method
                                   ORDER BY s.set_id DESC) = 1""",
    "set_sizes": """
        SELECT s.set_id, s.name, m.name AS model, t.name AS task, s.method, s.rule, s.size,
               s.size / (m.n_layers * m.d_mlp) AS fraction
        FROM neuron_sets s JOIN models m USING (model_id) LEFT JOIN tasks t USING (task_id)""",
    "set_overlaps": """
        WITH shared AS (
            SELECT a.set_id AS set_a, b.set_id AS set_b, count(*) AS n_shared
            FROM neuron_set_members a
            JOIN neuron_set_members b ON a.layer = b.layer AND a.neuron = b.neuron
            WHERE a.set_id IN (SELECT set_id FROM task_sets)
              AND b.set_id IN (SELECT set_id FROM task_sets)
            GROUP BY ALL
        )
        SELECT a.model, a.method, a.task AS task_a, b.task AS task_b,
               a.set_id AS set_a, b.set_id AS set_b, a.size AS size_a, b.size AS size_b,
               coalesce(sh.n_shared, 0) AS n_shared,
               coalesce(sh.n_shared, 0) / nullif(a.size + b.size - coalesce(sh.n_shared, 0), 0)
                   AS jaccard,
               coalesce(sh.n_shared, 0) / nullif(least(a.size, b.size), 0) AS overlap_coef
        FROM task_sets a
        JOIN task_sets b ON a.model_id = b.model_id AND a.method = b.method
        LEFT JOIN shared sh ON sh.set_a = a.set_id AND sh.set_b = b.set_id""",
    "unique_neurons": """
        SELECT ts.model, ts.method, m.layer, m.neuron, any_value(ts.task) AS task,
               any_value(ts.set_id) AS set_id
        FROM neuron_set_members m JOIN task_sets ts USING (set_id)
        GROUP BY ts.model_id, ts.model, ts.method, m.layer, m.neuron
        HAVING count(*) = 1""",
    "layer_counts": """
        SELECT ts.set_id, ts.model, ts.task, ts.method, m.layer, count(*) AS n,
               (m.layer + 0.5) / ts.n_layers AS rel_depth, count(*) / ts.size AS fraction
        FROM neuron_set_members m JOIN task_sets ts USING (set_id)
        GROUP BY ts.set_id, ts.model, ts.task, ts.method, m.layer, ts.n_layers, ts.size""",
}


def upgrade() -> None:
    op.execute("ALTER TABLE neuron_sets ADD COLUMN method VARCHAR")
    op.execute("""
        UPDATE neuron_sets SET method = (SELECT r.method FROM runs r WHERE r.run_id = neuron_sets.run_id)
        WHERE run_id IS NOT NULL""")
    for name, sql in VIEW_SQL.items():
        op.execute(f"CREATE VIEW {name} AS {sql}")


def downgrade() -> None:
    for view in VIEWS:
        op.execute(f"DROP VIEW {view}")
    op.execute("ALTER TABLE neuron_sets DROP COLUMN method")
