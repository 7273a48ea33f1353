"""Views keyed by id: every view carries model_id and task ids (and the model's dtype and
revision), and none derives a task's identity from its name (no split_part).

Revision ID: 0004
Revises: 0003
"""

from importlib import import_module

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Dependent views first when dropping.
ORDER = ["evaluation_effects", "layer_counts", "unique_neurons", "set_overlaps", "set_sizes",
         "task_sets"]
VIEW_SQL = {
    # The current set of each (model, task, method): the newest one.
    "task_sets": """
        SELECT s.set_id, s.name, s.model_id, m.name AS model, m.dtype, m.revision, s.task_id,
               t.name AS task, s.method, s.rule, s.size, s.run_id, m.n_layers, m.d_mlp
        FROM neuron_sets s
        JOIN models m USING (model_id)
        LEFT JOIN tasks t USING (task_id)
        QUALIFY row_number() OVER (PARTITION BY s.model_id, s.task_id, s.method
                                   ORDER BY s.set_id DESC) = 1""",
    "set_sizes": """
        SELECT s.set_id, s.name, s.model_id, m.name AS model, s.task_id, t.name AS task, s.method,
               s.rule, s.size, s.size / (m.n_layers * m.d_mlp) AS fraction
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
        SELECT a.model_id, a.model, a.method, a.task_id AS task_id_a, b.task_id AS task_id_b,
               a.task AS task_a, b.task AS task_b,
               a.set_id AS set_a, b.set_id AS set_b, a.size AS size_a, b.size AS size_b,
               coalesce(sh.n_shared, 0) AS n_shared,
               coalesce(sh.n_shared, 0) / nullif(a.size + b.size - coalesce(sh.n_shared, 0), 0)
                   AS jaccard,
               coalesce(sh.n_shared, 0) / nullif(least(a.size, b.size), 0) AS overlap_coef
        FROM task_sets a
        JOIN task_sets b ON a.model_id = b.model_id AND a.method = b.method
        LEFT JOIN shared sh ON sh.set_a = a.set_id AND sh.set_b = b.set_id""",
    "unique_neurons": """
        SELECT ts.model_id, ts.model, ts.method, m.layer, m.neuron,
               any_value(ts.task_id) AS task_id, any_value(ts.task) AS task,
               any_value(ts.set_id) AS set_id
        FROM neuron_set_members m JOIN task_sets ts USING (set_id)
        GROUP BY ts.model_id, ts.model, ts.method, m.layer, m.neuron
        HAVING count(*) = 1""",
    "layer_counts": """
        SELECT ts.set_id, ts.model_id, ts.model, ts.task_id, ts.task, ts.method, m.layer,
               count(*) AS n, (m.layer + 0.5) / ts.n_layers AS rel_depth,
               count(*) / ts.size AS fraction
        FROM neuron_set_members m JOIN task_sets ts USING (set_id)
        GROUP BY ts.set_id, ts.model_id, ts.model, ts.task_id, ts.task, ts.method, m.layer,
                 ts.n_layers, ts.size""",
    # Each intervened evaluation next to the unmodified one of the same configuration.
    "evaluation_effects": """
        SELECT e.eval_id, e.model_id, m.name AS model, e.set_id, s.name AS set_name,
               s.task_id AS set_task_id, ts.name AS set_task, s.method, e.factor, e.is_control,
               e.control_seed, e.eval_task_id, et.name AS eval_task, e.metric, e.n, e.seed,
               e.params_key, b.value AS baseline, e.value,
               e.value - b.value AS delta,
               (e.value - b.value) / nullif(b.value, 0) AS rel_change
        FROM evaluations e
        JOIN models m USING (model_id)
        JOIN neuron_sets s ON s.set_id = e.set_id
        LEFT JOIN tasks ts ON ts.task_id = s.task_id
        JOIN tasks et ON et.task_id = e.eval_task_id
        JOIN evaluations b ON b.model_id = e.model_id AND b.set_id IS NULL
             AND b.eval_task_id = e.eval_task_id AND b.metric = e.metric
             AND b.params_key = e.params_key""",
}


def _create(views: dict[str, str]) -> None:
    for name in reversed(ORDER):
        op.execute(f"CREATE VIEW {name} AS {views[name]}")


def _drop() -> None:
    for name in ORDER:
        op.execute(f"DROP VIEW {name}")


def upgrade() -> None:
    _drop()
    _create(VIEW_SQL)


def downgrade() -> None:
    _drop()
    before = dict(import_module("migrations.versions.0002_query_views").VIEW_SQL)
    before["evaluation_effects"] = import_module("migrations.versions.0003_evaluations").EFFECTS_SQL
    _create(before)
