"""Webhook subscriptions and their deliveries, and exceptions: the records of conditions someone owns.

A delivery is one outbox event for one subscription; the dispatcher claims it with a lease, so several
dispatchers (processes, hosts) never send the same delivery at once. An exception is open once per
(kind, key): a unique index over the unresolved ones makes racing raisers insert one row."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base

UNRESOLVED = text("state <> 'resolved'")


class Subscription(Base):
    """Where events of some kinds go, and the secret their signature is made with (never shown)."""

    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON)  # kind patterns: "case.*", "exception.opened", "*"
    secret: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxDispatch(Base):
    """An outbox event whose deliveries exist: written with them, in one transaction, exactly once."""

    __tablename__ = "outbox_dispatch"

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxMark(Base):
    """Where the webhook dispatchers' fan-out looks from, one row (id 1) for every dispatcher of the
    database: every outbox event before it has its dispatch row (`service.workflow.fan_out`: on SQLite an
    outbox id, on PostgreSQL the transactions a read could not see, as JSON). NULL: look at every event.
    A round holds the row while it reads and claims, and moves the mark in the claim's transaction."""

    __tablename__ = "outbox_mark"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    mark: Mapped[str | None] = mapped_column(Text, nullable=True)


class Delivery(Base):
    """One event for one subscription: pending until delivered, or dead after its last attempt."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "subscription_id", name="uq_deliveries_event_subscription"),
        Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36))
    subscription_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # what a reader may see: "HTTP 503", "timeout", "connection failed"; never a stack or an address
    last_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ExceptionRecord(Base):
    """A condition that needs a person: open -> acknowledged -> resolved (by a person or on its own)."""

    __tablename__ = "exception_records"
    __table_args__ = (
        Index(
            "uq_exception_records_unresolved",
            "kind",
            "key",
            unique=True,
            sqlite_where=UNRESOLVED,
            postgresql_where=UNRESOLVED,
        ),
        Index("ix_exception_records_state_opened_at", "state", "opened_at"),
        # the listing by kind or by location, newest (highest id) first, in its order as read
        Index("ix_exception_records_kind_id", "kind", "id"),
        Index("ix_exception_records_location_id", "location", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))  # open | acknowledged | resolved
    location: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sku: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    assignee: Mapped[str | None] = mapped_column(String(200), nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class ExpectedReceipt(Base):
    """Stock sent to a location with the date it should arrive (a `transfer_out` with `expected_at`)."""

    __tablename__ = "expected_receipts"
    __table_args__ = (
        # read only while units are outstanding (the delayed-receipt check, a transfer_in booking units in):
        # a receipt fully in leaves both
        Index(
            "ix_expected_receipts_outstanding_expected_at",
            "expected_at",
            sqlite_where=text("outstanding > 0"),
            postgresql_where=text("outstanding > 0"),
        ),
        Index(
            "ix_expected_receipts_outstanding_sku_to_location",
            "sku",
            "to_location",
            sqlite_where=text("outstanding > 0"),
            postgresql_where=text("outstanding > 0"),
        ),
    )

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the transfer_out's event id
    sku: Mapped[str] = mapped_column(String(64))
    from_location: Mapped[str] = mapped_column(String(64))
    to_location: Mapped[str] = mapped_column(String(64))
    reference: Mapped[str | None] = mapped_column(String(200), nullable=True)
    qty: Mapped[int] = mapped_column(Integer)
    outstanding: Mapped[int] = mapped_column(Integer)  # units not yet booked in by a transfer_in
    expected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
