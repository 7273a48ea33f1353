"""Neuron evidence: what each neuron responds to (exemplars of both signs, quantile samples,
density per task, from one evidence run over text) and what it writes (its direct logit
effects, per model, with the model's vocabulary).

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE seq_evidence_runs START 1")
    op.execute("""
        CREATE TABLE evidence_runs (
            evidence_id  INTEGER PRIMARY KEY DEFAULT nextval('seq_evidence_runs'),
            model_id     INTEGER NOT NULL,
            status       VARCHAR NOT NULL,
            params       JSON,
            params_key   VARCHAR NOT NULL,
            n_sequences  INTEGER,
            n_tokens     BIGINT,
            started_at   TIMESTAMP,
            finished_at  TIMESTAMP
        )""")
    op.execute("""
        CREATE TABLE evidence_contexts (
            evidence_id  INTEGER NOT NULL,
            context_id   INTEGER NOT NULL,
            task_id      INTEGER NOT NULL,
            instance_id  VARCHAR NOT NULL,
            token_ids    INTEGER[] NOT NULL,
            tokens       VARCHAR[] NOT NULL,
            peak         SMALLINT NOT NULL
        )""")
    op.execute("""
        CREATE TABLE neuron_exemplars (
            evidence_id  INTEGER NOT NULL,
            layer        SMALLINT NOT NULL,
            neuron       INTEGER NOT NULL,
            sign         SMALLINT NOT NULL,
            rank         SMALLINT NOT NULL,
            context_id   INTEGER NOT NULL,
            activation   FLOAT NOT NULL,
            activations  FLOAT[] NOT NULL
        )""")
    op.execute("""
        CREATE TABLE neuron_quantiles (
            evidence_id  INTEGER NOT NULL,
            layer        SMALLINT NOT NULL,
            neuron       INTEGER NOT NULL,
            bin          SMALLINT NOT NULL,
            low          FLOAT NOT NULL,
            high         FLOAT NOT NULL,
            activation   FLOAT NOT NULL,
            context_id   INTEGER NOT NULL
        )""")
    op.execute("""
        CREATE TABLE neuron_density (
            evidence_id  INTEGER NOT NULL,
            task_id      INTEGER NOT NULL,
            layer        SMALLINT NOT NULL,
            neuron       INTEGER NOT NULL,
            n_tokens     INTEGER NOT NULL,
            n_positive   INTEGER NOT NULL,
            mean         FLOAT NOT NULL,
            hist         INTEGER[] NOT NULL
        )""")
    op.execute("""
        CREATE TABLE neuron_logits (
            model_id        INTEGER NOT NULL,
            layer           SMALLINT NOT NULL,
            neuron          INTEGER NOT NULL,
            promoted_ids    INTEGER[] NOT NULL,
            promoted        FLOAT[] NOT NULL,
            suppressed_ids  INTEGER[] NOT NULL,
            suppressed      FLOAT[] NOT NULL
        )""")
    op.execute("""
        CREATE TABLE vocab (
            model_id  INTEGER NOT NULL,
            token_id  INTEGER NOT NULL,
            token     VARCHAR NOT NULL
        )""")
    # The peak token of every exemplar: "which neurons fire most on this token?"
    op.execute("""
        CREATE VIEW exemplar_peaks AS
        SELECT e.evidence_id, r.model_id, e.layer, e.neuron, e.sign, e.rank, e.activation,
               c.tokens[c.peak + 1] AS token, c.token_ids[c.peak + 1] AS token_id, c.task_id,
               e.context_id
        FROM neuron_exemplars e JOIN evidence_contexts c USING (evidence_id, context_id)
        JOIN evidence_runs r USING (evidence_id)
        WHERE r.status = 'complete'""")


def downgrade() -> None:
    op.execute("DROP VIEW exemplar_peaks")
    for table in ("vocab", "neuron_logits", "neuron_density", "neuron_quantiles",
                  "neuron_exemplars", "evidence_contexts", "evidence_runs"):
        op.execute(f"DROP TABLE {table}")
    op.execute("DROP SEQUENCE seq_evidence_runs")
