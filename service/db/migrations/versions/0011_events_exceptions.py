"""Webhook subscriptions and deliveries, exception records, and expected receipts.

Revision ID: 0011_events_exceptions
Revises: 0010_key_expiry
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_events_exceptions"
down_revision = "0010_key_expiry"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)
UNRESOLVED = sa.text("state <> 'resolved'")


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(200), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_table(
        "outbox_dispatch",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("at", TIME, nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIME, nullable=False),
        sa.Column("lease_until", TIME, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("last_attempt_at", TIME, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("delivered_at", TIME, nullable=True),
        sa.UniqueConstraint("event_id", "subscription_id", name="uq_deliveries_event_subscription"),
    )
    op.create_index("ix_deliveries_status_next_attempt_at", "deliveries", ["status", "next_attempt_at"])
    op.create_table(
        "exception_records",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("location", sa.String(64), nullable=True),
        sa.Column("sku", sa.String(64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("assignee", sa.String(200), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("opened_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("acknowledged_at", TIME, nullable=True),
        sa.Column("resolved_at", TIME, nullable=True),
        sa.Column("resolved_by", sa.String(200), nullable=True),
    )
    # one unresolved record per condition, however many raisers race
    op.create_index(
        "uq_exception_records_unresolved",
        "exception_records",
        ["kind", "key"],
        unique=True,
        sqlite_where=UNRESOLVED,
        postgresql_where=UNRESOLVED,
    )
    op.create_index("ix_exception_records_state_opened_at", "exception_records", ["state", "opened_at"])
    op.create_table(
        "expected_receipts",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("sku", sa.String(64), nullable=False),
        sa.Column("from_location", sa.String(64), nullable=False),
        sa.Column("to_location", sa.String(64), nullable=False),
        sa.Column("reference", sa.String(200), nullable=True),
        sa.Column("qty", sa.Integer(), nullable=False),
        sa.Column("outstanding", sa.Integer(), nullable=False),
        sa.Column("expected_at", TIME, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_index("ix_expected_receipts_sku_to_location", "expected_receipts", ["sku", "to_location"])
    op.create_index("ix_expected_receipts_expected_at", "expected_receipts", ["expected_at"])


def downgrade() -> None:
    for table in ("expected_receipts", "exception_records", "deliveries", "outbox_dispatch", "subscriptions"):
        op.drop_table(table)
