"""The workflow behind routed decisions: approval cases, their steps, and the outbox of events that
leave the service (webhooks). A case transition, its audit row and its outbox row commit together."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, FetchedValue, Float, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base
from service.db.models.foundation import BigIntPK


class ApprovalCase(Base):
    """One routed transfer or markdown request waiting for (or past) its approvals."""

    __tablename__ = "approval_cases"
    __table_args__ = (
        # the sweeper's and the stuck-approval check's: pending cases by SLA (a transition that leaves the
        # status alone, or moves a case between two other statuses, does not touch it)
        Index(
            "ix_approval_cases_pending_sla_due_at",
            "sla_due_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_approval_cases_status_created_at", "status", "created_at"),
        # the moves' recovery's: executed transfers by update time (a case leaves it once received)
        Index(
            "ix_approval_cases_executed_transfers",
            "updated_at",
            sqlite_where=text("status = 'executed' AND kind = 'transfer'"),
            postgresql_where=text("status = 'executed' AND kind = 'transfer'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # transfer | markdown
    subject: Mapped[str] = mapped_column(String(200), index=True)  # e.g. "transfer:t-77"
    requested_by: Mapped[str] = mapped_column(String(200))
    decision_id: Mapped[str] = mapped_column(String(36))
    # pending -> approved | rejected | expired | cancelled; approved -> executed | blocked
    status: Mapped[str] = mapped_column(String(16))
    approvers: Mapped[list[str]] = mapped_column(JSON)  # roles whose holders may approve now
    approvals_required: Mapped[int] = mapped_column(Integer)  # how many distinct people must approve
    escalation: Mapped[list[str]] = mapped_column(JSON)  # the roles still above the current level
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    sla_hours: Mapped[float | None] = mapped_column(Float, nullable=True)
    sla_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    outcome_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # bumped by every transition: an update that names the version it read makes racing writers serialise
    version: Mapped[int] = mapped_column(Integer, default=0)


class ApprovalStep(Base):
    """One thing that happened to a case: opened, approved, rejected, escalated, expired, executed, ..."""

    __tablename__ = "approval_steps"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(String(36), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(200))
    role: Mapped[str | None] = mapped_column(String(64), nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


class OutboxEvent(Base):
    """An event for subscribers, written in the transaction of the change it reports; a dispatcher
    delivers it later. `event_id` is what receivers de-duplicate by."""

    __tablename__ = "outbox_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    kind: Mapped[str] = mapped_column(String(64))  # e.g. "case.approved" (events are read in id order)
    subject: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # on PostgreSQL the id of the transaction that wrote the row (`pg_current_xact_id()`, the column's
    # default there): how the dispatcher finds events committed after others with higher ids without
    # looking at the whole outbox (`service.workflow.dispatcher`); on SQLite always NULL
    txid: Mapped[int | None] = mapped_column(BigInteger, nullable=True, server_default=FetchedValue())
