"""Decision log.

Revision ID: 0004_decisions
Revises: 0003_rulesets
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_decisions"
down_revision = "0003_rulesets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.String(128), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("ruleset_name", sa.String(100), nullable=False),
        sa.Column("ruleset_version", sa.Integer, nullable=False),
        sa.Column("ruleset_sha256", sa.String(64), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("decision", sa.JSON, nullable=False),
        sa.Column("trace", sa.JSON, nullable=True),
        sa.Column("shadow", sa.JSON, nullable=True),
        sa.Column("timings", sa.JSON, nullable=False),
    )
    op.create_index("ix_decisions_kind_created_at", "decisions", ["kind", "created_at"])
    op.create_index("ix_decisions_kind_idempotency_key", "decisions", ["kind", "idempotency_key"])


def downgrade() -> None:
    op.drop_index("ix_decisions_kind_idempotency_key", "decisions")
    op.drop_index("ix_decisions_kind_created_at", "decisions")
    op.drop_table("decisions")
