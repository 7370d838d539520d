"""Workflow: approval cases and their steps, and the outbox of events for subscribers.

Revision ID: 0009_workflow
Revises: 0008_simulation_heartbeat
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_workflow"
down_revision = "0008_simulation_heartbeat"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "approval_cases",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("decision_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.Column("approvals_required", sa.Integer(), nullable=False),
        sa.Column("escalation", sa.JSON(), nullable=False),
        sa.Column("escalation_level", sa.Integer(), nullable=False),
        sa.Column("sla_hours", sa.Float(), nullable=True),
        sa.Column("sla_due_at", TIME, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("closed_at", TIME, nullable=True),
        sa.Column("outcome_reason", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_approval_cases_subject", "approval_cases", ["subject"])
    op.create_index("ix_approval_cases_status_sla_due_at", "approval_cases", ["status", "sla_due_at"])
    op.create_index("ix_approval_cases_status_created_at", "approval_cases", ["status", "created_at"])
    op.create_table(
        "approval_steps",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.String(36), nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("role", sa.String(64), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
    )
    op.create_index("ix_approval_steps_case_id", "approval_steps", ["case_id"])
    op.create_table(
        "outbox_events",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_index("ix_outbox_events_kind", "outbox_events", ["kind"])


def downgrade() -> None:
    op.drop_table("outbox_events")
    op.drop_table("approval_steps")
    op.drop_table("approval_cases")
