"""The decision log: every decision with its input, output, ruleset version, trace and shadow differences."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, text
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
    trace: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    shadow: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON)
    # what the decision read beyond its request and facts (`DecisionRecord.inputs`); null when not recorded
    inputs: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
