"""Stock tables: levels per (sku, location), applied event ids, reservations, anomalies and the journal.

The SQL stock backend keeps its state in the first four and `capacity_usage`; the Redis backend appends every change it
acknowledges to `stock_journal` (as signed deltas) so that its state can be rebuilt after a cache loss.
Times the stores compare (reservation expiry) are epoch milliseconds, identical on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Double, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.db.base import Base
from service.db.models.foundation import BigIntPK


class StockLevel(Base):
    __tablename__ = "stock_levels"

    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    location: Mapped[str] = mapped_column(String(64), primary_key=True)
    sellable: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved: Mapped[int] = mapped_column(BigInteger, default=0)
    damaged: Mapped[int] = mapped_column(BigInteger, default=0)
    return_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    in_transit: Mapped[int] = mapped_column(BigInteger, default=0)
    # Weighted daily demand from applied sales and the epoch ms of the last one (see service.stock.demand).
    demand_rate: Mapped[float | None] = mapped_column(Double, nullable=True)
    demand_at_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class StockEventRecord(Base):
    """One row per applied event id: the unique key that makes events idempotent."""

    __tablename__ = "stock_events"
    # the console's stock page: a SKU's newest events, in its order as read
    __table_args__ = (Index("ix_stock_events_sku_applied_at", "sku", "applied_at_ms"),)

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    applied_at_ms: Mapped[int] = mapped_column(BigInteger)


class ReservationRecord(Base):
    __tablename__ = "reservations"
    __table_args__ = (Index("ix_reservations_status_expires", "status", "expires_at_ms"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), index=True)
    channel: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    lines: Mapped[list[Any]] = mapped_column(JSON)
    expires_at_ms: Mapped[int] = mapped_column(BigInteger)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    # {"day": "YYYY-MM-DD", "taken": [[location, units], ...]} when the units count against daily capacity
    capacity: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class CapacityUsage(Base):
    """Units counted against a location's daily capacity on one business day (held and committed)."""

    __tablename__ = "capacity_usage"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    location: Mapped[str] = mapped_column(String(64), primary_key=True)
    used: Mapped[int] = mapped_column(BigInteger, default=0)


class StockExceptionRecord(Base):
    __tablename__ = "stock_exceptions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(32))
    sku: Mapped[str] = mapped_column(String(64), index=True)
    location: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(64))
    qty: Mapped[int] = mapped_column(BigInteger)
    shortfall: Mapped[int] = mapped_column(BigInteger)


class StockJournalEntry(Base):
    """Append-only: what one acknowledged change did, as deltas, plus the reservation record it touched."""

    __tablename__ = "stock_journal"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    ref: Mapped[str] = mapped_column(String(200))
    deltas: Mapped[list[Any]] = mapped_column(JSON)
    record: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class StockIntent(Base):
    """A Redis Cluster order or finish taken in steps on several slots, open while it is under way (see
    `service.stock.crossslot`): one row per reservation at most; deleted in the transaction that
    journals its outcome, or once its steps are compensated. `lease_until_ms` is when its owner's lease
    lapses and the recovery sweep may take it over."""

    __tablename__ = "stock_intents"
    # ids are attempt tokens (the fences in Redis name them): never reused, also on SQLite
    __table_args__ = (UniqueConstraint("rid", name="uq_stock_intents_rid"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    rid: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    lease_until_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class StockCheckpoint(Base):
    """The journal checkpoint's one row (id 1): what the folds of old journal days added up to (see
    `service.stock.checkpoint`); `generation` rises with every fold."""

    __tablename__ = "stock_checkpoint"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger)
    entries: Mapped[int] = mapped_column(BigInteger)
    last_id: Mapped[int] = mapped_column(BigInteger)
    writes: Mapped[int] = mapped_column(BigInteger)
    cutoff_ms: Mapped[int] = mapped_column(BigInteger)
    made_at_ms: Mapped[int] = mapped_column(BigInteger)


class StockCheckpointItem(Base):
    """One piece of the folded journal state: `kind` level | rate | event | resv, `key` its position
    ("SKU<TAB>LOCATION"), event id or reservation id (see `service.stock.fold`)."""

    __tablename__ = "stock_checkpoint_items"

    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
