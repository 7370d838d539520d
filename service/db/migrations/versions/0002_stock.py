"""Stock: levels, applied events, reservations, anomalies and the journal.

Revision ID: 0002_stock
Revises: 0001_foundation
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_stock"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "stock_levels",
        sa.Column("sku", sa.String(64), primary_key=True),
        sa.Column("location", sa.String(64), primary_key=True),
        sa.Column("sellable", sa.BigInteger, nullable=False),
        sa.Column("reserved", sa.BigInteger, nullable=False),
        sa.Column("damaged", sa.BigInteger, nullable=False),
        sa.Column("return_pending", sa.BigInteger, nullable=False),
        sa.Column("in_transit", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "stock_events",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("applied_at_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "reservations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("lines", sa.JSON, nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger, nullable=False),
        sa.Column("created_at_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_reservations_order_id", "reservations", ["order_id"])
    op.create_index("ix_reservations_status_expires", "reservations", ["status", "expires_at_ms"])
    op.create_table(
        "stock_exceptions",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("location", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("qty", sa.BigInteger, nullable=False),
        sa.Column("shortfall", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_stock_exceptions_sku", "stock_exceptions", ["sku"])
    op.create_table(
        "stock_journal",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(200), nullable=False),
        sa.Column("deltas", sa.JSON, nullable=False),
        sa.Column("record", sa.JSON, nullable=True),
    )


def downgrade() -> None:
    for table in ("stock_journal", "stock_exceptions", "reservations", "stock_events", "stock_levels"):
        op.drop_table(table)
