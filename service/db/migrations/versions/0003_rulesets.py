"""Rulesets: immutable versions, active and shadow pointers, per-kind defaults, the generation counter.

Revision ID: 0003_rulesets
Revises: 0002_stock
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003_rulesets"
down_revision = "0002_stock"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ruleset_versions",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("yaml_text", sa.Text, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("publisher", sa.String(200), nullable=True),
        sa.Column("published_at", TS, nullable=True),
        sa.Column("retired_at", TS, nullable=True),
        sa.Column("validation", sa.JSON, nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_ruleset_versions_name_version"),
        sa.UniqueConstraint("name", "sha256", name="uq_ruleset_versions_name_sha256"),
    )
    op.create_index("ix_ruleset_versions_name", "ruleset_versions", ["name"])
    op.create_table(
        "rulesets",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("active_version", sa.Integer, nullable=True),
        sa.Column("shadow_version", sa.Integer, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_rulesets_kind", "rulesets", ["kind"])
    op.create_table(
        "ruleset_kinds",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("ruleset_name", sa.String(100), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    generation = op.create_table(
        "ruleset_generation",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("changed_at", TS, nullable=False),
    )
    op.bulk_insert(generation, [{"id": 1, "generation": 0, "changed_at": datetime.now(UTC)}])


def downgrade() -> None:
    for table in ("ruleset_generation", "ruleset_kinds", "rulesets", "ruleset_versions"):
        op.drop_table(table)
