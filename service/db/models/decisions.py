"""The decision log: every decision with its input, output, ruleset version, trace and shadow differences.

A decision's trace is kept once per day and content in `decision_traces` (`DecisionTrace`) and the decision
names it by digest (`trace_digest`): the default-level trace of the same SKUs or order shape under the
same ruleset is the same bytes decision after decision. Decisions logged before that keep theirs in
`trace`."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, DateTime, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base


class DecisionEntry(Base):
    __tablename__ = "decisions"
    __table_args__ = (
        Index("ix_decisions_kind_created_at", "kind", "created_at"),
        # only the decisions that have a key (most have none): `kind = ? AND idempotency_key = ?` uses it
        Index(
            "ix_decisions_kind_idempotency_key",
            "kind",
            "idempotency_key",
            sqlite_where=text("idempotency_key IS NOT NULL"),
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        # lookups by order id (and the other subjects); on PostgreSQL the table is partitioned by day
        # on created_at and its primary key is (id, created_at): see service/db/partitions.py
        Index("ix_decisions_subject_created_at", "subject", "created_at"),
        # the console's page without a filter: the newest decisions, in its order as read
        Index("ix_decisions_created_at_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    subject: Mapped[str | None] = mapped_column(String(128), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)
    ruleset_name: Mapped[str] = mapped_column(String(100))
    ruleset_version: Mapped[int] = mapped_column(Integer)
    ruleset_sha256: Mapped[str] = mapped_column(String(64))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    decision: Mapped[dict[str, Any]] = mapped_column(JSON)
    # the trace inline (decisions logged before traces were kept apart; null since)
    trace: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # the digest of the decision's trace in `decision_traces`, on the UTC day of `created_at`; null: no trace
    trace_digest: Mapped[str | None] = mapped_column(String(32), nullable=True)
    shadow: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON)
    # what the decision read beyond its request and facts (`DecisionRecord.inputs`); null when not recorded
    inputs: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class DecisionTrace(Base):
    """A decision trace, once per UTC day and content: the decisions of that day with this trace name its
    digest. On PostgreSQL partitioned by `day` like the decision log by `created_at`, and its old days
    dropped with the log's (service/db/partitions.py), so a trace lives as long as its decisions."""

    __tablename__ = "decision_traces"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    digest: Mapped[str] = mapped_column(String(32), primary_key=True)
    trace: Mapped[dict[str, Any]] = mapped_column(JSON)
