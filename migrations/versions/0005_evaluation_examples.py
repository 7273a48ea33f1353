"""Per-example outcomes of every evaluation: what each held-out example scored, so reports can
give intervals and paired tests on the same examples.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE evaluation_examples (
            eval_id      INTEGER NOT NULL,
            example      INTEGER NOT NULL,
            instance_id  VARCHAR NOT NULL,
            gold         VARCHAR NOT NULL,
            predicted    VARCHAR,
            gold_logprob DOUBLE,
            gold_prob    DOUBLE,
            correct      BOOLEAN NOT NULL
        )""")


def downgrade() -> None:
    op.execute("DROP TABLE evaluation_examples")
