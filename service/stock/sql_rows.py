"""Rows of the SQL stock store: its tables, reading stored reservations and anomalies, and the small
conversions its transactions share (also used by the Redis backend, which records anomalies in SQL)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
from sqlalchemy import Table, event, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

import service.stock.demand as demand
from service.db.base import aware
from service.db.models.stock import (
    CapacityUsage,
    ReservationRecord,
    StockEventRecord,
    StockExceptionRecord,
    StockLevel,
)
from service.stock.store import (
    CapacityClaim,
    Levels,
    Reservation,
    ReservedLine,
    StockEvent,
    StockException,
    StockUnavailable,
)

log = logging.getLogger("retail_policy.stock")
LEVELS = cast(Table, StockLevel.__table__)
EVENTS = cast(Table, StockEventRecord.__table__)
RESERVATIONS = cast(Table, ReservationRecord.__table__)
EXCEPTIONS = cast(Table, StockExceptionRecord.__table__)
CAPACITY = cast(Table, CapacityUsage.__table__)


def unavailable(error: Exception) -> StockUnavailable:
    # the driver's words (hosts, paths) go to the log, not to the caller
    log.warning("stock database is not answering: %s: %s", type(error).__name__, error)
    return StockUnavailable("stock database is not answering", retry_after=1)


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def immediate_transactions(engine: AsyncEngine) -> None:
    """Make every transaction on this SQLite engine take the write lock at BEGIN."""

    @event.listens_for(engine.sync_engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


async def read_exceptions(engine: AsyncEngine, limit: int) -> list[StockException]:
    """The most recent anomalies first (shared with the Redis backend, which records them in SQL)."""
    async with engine.connect() as conn:
        query = select(EXCEPTIONS).order_by(EXCEPTIONS.c.id.desc()).limit(limit)
        return [
            StockException(
                kind=r["kind"],
                sku=r["sku"],
                location=r["location"],
                event_id=r["event_id"],
                qty=int(r["qty"]),
                shortfall=int(r["shortfall"]),
                at=aware(r["at"]),
                id=int(r["id"]),
            )
            for r in (await conn.execute(query)).mappings()
        ]


def sqlstate(error: sa_exc.DBAPIError) -> str | None:
    orig = error.orig
    for attr in ("sqlstate", "pgcode"):
        value = getattr(orig, attr, None)
        if isinstance(value, str):
            return value
    cause = getattr(orig, "__cause__", None)
    value = getattr(cause, "sqlstate", None)
    return value if isinstance(value, str) else None


def sale_rate(row: Any, ev: StockEvent, at_ms: int) -> tuple[demand.Pair, demand.DemandState]:
    """The demand state a sale leaves on its row (`row` as read and locked before it, or None)."""
    known = row is not None and row["demand_at_ms"] is not None
    before = demand.DemandState(float(row["demand_rate"]), int(row["demand_at_ms"])) if known else None
    return (ev.sku, ev.location), demand.after_sale(before, ev.qty, at_ms)


def claimed(claim: CapacityClaim) -> list[str]:
    return [limit.location for limit in claim.limits]


def stored_claim(claim: CapacityClaim, counted: dict[str, int]) -> dict[str, Any]:
    return {"day": claim.day, "taken": [[location, qty] for location, qty in counted.items()]}


def level_at(levels: dict[tuple[str, str], Levels], sku: str, location: str) -> Levels:
    return levels.get((sku, location)) or Levels()


def reserved_lines(raw: Sequence[Sequence[Any]]) -> tuple[ReservedLine, ...]:
    return tuple(ReservedLine(str(sku), str(loc), int(qty)) for sku, loc, qty in raw)


def reservation_of(row: Any) -> Reservation:
    return Reservation(
        id=row["id"],
        order_id=row["order_id"],
        channel=row["channel"],
        idempotency_key=row["idempotency_key"],
        lines=reserved_lines(row["lines"]),
        status=row["status"],
        expires_at=from_ms(int(row["expires_at_ms"])),
        created_at=from_ms(int(row["created_at_ms"])),
    )


def replace_status(reservation: Reservation, status: str) -> Reservation:
    return msgspec.structs.replace(reservation, status=status)
