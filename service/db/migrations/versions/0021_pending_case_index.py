"""Approval cases: the index by SLA holds the pending cases only.

The sweeper and the stuck-approval check look for pending cases past their SLA; nothing else reads cases
by SLA. The index of (status, sla_due_at) changed with every transition that changes a case's status (an
approved transfer: twice, approved and then executed); the partial index of (sla_due_at) `WHERE status =
'pending'` changes only as a case enters or leaves pending, or escalates with a fresh SLA. A query whose
condition names `status = 'pending'` uses it on SQLite and PostgreSQL alike.

Revision ID: 0021_pending_case_index
Revises: 0019_decision_key_index
"""

import sqlalchemy as sa
from alembic import op

revision = "0021_pending_case_index"
down_revision = "0019_decision_key_index"
branch_labels = None
depends_on = None

OLD = "ix_approval_cases_status_sla_due_at"
NEW = "ix_approval_cases_pending_sla_due_at"
PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.drop_index(OLD, "approval_cases")
    op.create_index(NEW, "approval_cases", ["sla_due_at"], sqlite_where=PENDING, postgresql_where=PENDING)


def downgrade() -> None:
    op.drop_index(NEW, "approval_cases")
    op.create_index(OLD, "approval_cases", ["status", "sla_due_at"])
