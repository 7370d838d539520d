"""Approval workflow: filed requests, the inbox index of cases by role, and effective-dated item prices.

Revision ID: 0012_approval_requests
Revises: 0011_events_exceptions
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_approval_requests"
down_revision = "0011_events_exceptions"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "change_requests",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("decision", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("approval", sa.String(8), nullable=False),
        sa.Column("shipment_id", sa.String(64), nullable=True, unique=True),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_index("ix_change_requests_case_id", "change_requests", ["case_id"])
    op.create_table(
        "approval_case_roles",
        sa.Column("case_id", sa.String(36), primary_key=True),
        sa.Column("role", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_index(
        "ix_approval_case_roles_inbox", "approval_case_roles", ["role", "status", "created_at", "case_id"]
    )
    op.create_table(
        "item_prices",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("price", sa.Float(), nullable=False),
        sa.Column("effective_at", TIME, nullable=False),
        sa.Column("case_id", sa.String(36), nullable=True, unique=True),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_index("ix_item_prices_sku_effective_at", "item_prices", ["sku", "effective_at"])


def downgrade() -> None:
    op.drop_table("item_prices")
    op.drop_table("approval_case_roles")
    op.drop_table("change_requests")
