"""Approval cases: the index by SLA holds the pending cases only; audit and outbox rows lose the indexes
nobody reads by.

The sweeper and the stuck-approval check look for pending cases past their SLA; nothing else reads cases
by SLA. The index of (status, sla_due_at) changed with every transition that changes a case's status (an
approved transfer: twice, approved and then executed); the partial index of (sla_due_at) `WHERE status =
'pending'` changes only as a case enters or leaves pending, or escalates with a fresh SLA. A query whose
condition names `status = 'pending'` uses it on SQLite and PostgreSQL alike.

The audit log is read by subject in id order, the outbox in id order: the indexes of `audit_log.at` and
`outbox_events.kind` were written with every row (two audit rows and three events per executed transfer)
and read by no query.

Revision ID: 0021_case_indexes
Revises: 0020_decision_traces
"""

import sqlalchemy as sa
from alembic import op

revision = "0021_case_indexes"
down_revision = "0020_decision_traces"
branch_labels = None
depends_on = None

OLD = "ix_approval_cases_status_sla_due_at"
NEW = "ix_approval_cases_pending_sla_due_at"
PENDING = sa.text("status = 'pending'")


UNREAD = (("ix_audit_log_at", "audit_log", "at"), ("ix_outbox_events_kind", "outbox_events", "kind"))


def upgrade() -> None:
    op.drop_index(OLD, "approval_cases")
    op.create_index(NEW, "approval_cases", ["sla_due_at"], sqlite_where=PENDING, postgresql_where=PENDING)
    for name, table, _column in UNREAD:
        op.drop_index(name, table)


def downgrade() -> None:
    for name, table, column in UNREAD:
        op.create_index(name, table, [column])
    op.drop_index(NEW, "approval_cases")
    op.create_index(OLD, "approval_cases", ["status", "sla_due_at"])
