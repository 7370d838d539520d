"""Helpers the five use cases share: building the record, reading master data, mapping stock errors."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, TypeVar

import msgspec

from service.decisions.context import DecisionContext
from service.decisions.record import DecisionRecord
from service.domain.allocation import Location
from service.domain.errors import InvalidInput
from service.masterdata import ItemRecord, LocationRecord, MasterData
from service.stock import StockError
from service.stock.service_errors import as_service_error

T = TypeVar("T")


def to_location(record: LocationRecord) -> Location:
    return Location(
        record.id,
        record.type,
        record.region,
        record.lat,
        record.lon,
        frozenset(record.capabilities),
        record.daily_capacity,
        record.priority,
    )


def candidate_locations(md: MasterData) -> tuple[Location, ...]:
    """The allocator's view of every location of a master data snapshot, built once and kept with it."""
    return md.derived(candidate_locations, lambda: tuple(to_location(r) for r in md.locations.values()))


def locations_fingerprint(md: MasterData) -> str:
    """A short digest of every field the allocator reads of a snapshot's locations, built once and kept
    with it: an allocation logs it, so that recomputing its trace later can tell whether the locations are
    still those it planned over."""

    def digest() -> str:
        rows = sorted(
            (
                loc.id,
                loc.type,
                loc.region,
                loc.lat,
                loc.lon,
                sorted(loc.capabilities),
                loc.capacity_remaining,
                loc.priority,
            )
            for loc in candidate_locations(md)
        )
        return hashlib.sha256(msgspec.json.encode(rows)).hexdigest()[:16]

    return md.derived(locations_fingerprint, digest)


def location_types(md: MasterData) -> dict[str, str]:
    """Location id -> its type for a master data snapshot, built once and kept with it; read only."""
    return md.derived(location_types, lambda: {r.id: r.type for r in md.locations.values()})


def known_item(md: MasterData, sku: str, field: str) -> ItemRecord:
    """The item master data knows as `sku`; 422 naming `field` otherwise."""
    item = md.items.get(sku)
    if item is None:
        raise InvalidInput(field, f"unknown sku {sku!r}")
    return item


def known_location(md: MasterData, location: str, field: str) -> LocationRecord:
    """The location master data knows as `location`; 422 naming `field` otherwise."""
    found = md.locations.get(location)
    if found is None:
        raise InvalidInput(field, f"unknown location {location!r}")
    return found


async def stock_call(call: Awaitable[T]) -> T:
    """Await a stock store call, turning its errors into the service's own."""
    try:
        return await call
    except StockError as exc:
        raise as_service_error(exc) from exc


def as_builtins(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(value)
    return out


async def finish(
    ctx: DecisionContext,
    *,
    decision_id: str,
    kind: str,
    request: Any,
    decision: dict[str, Any],
    evaluated: Any,
    trace: dict[str, Any] | None,
    shadow: dict[str, Any] | None,
    timings: dict[str, float],
    subject: str | None = None,
    idempotency_key: str | None = None,
    inputs: dict[str, Any] | None = None,
) -> DecisionRecord:
    """Build the record, log it (waiting if the log's queue is full) and return it."""
    timings = {**timings, "total_ms": ctx.elapsed_ms()}
    record = DecisionRecord(
        id=decision_id,
        kind=kind,
        created_at=ctx.now,
        request=as_builtins(request),
        decision=decision,
        ruleset=evaluated.ruleset_ref(),
        trace=trace,
        timings=timings,
        shadow=shadow,
        subject=subject,
        idempotency_key=idempotency_key,
        actor=ctx.actor,
        inputs=inputs,
    )
    await ctx.log.record(record)
    return record


def record_from_log(logged: dict[str, Any]) -> DecisionRecord:
    """A logged decision answered again (an idempotent replay), marked as such."""
    return DecisionRecord(
        id=logged["decision_id"],
        kind=logged["kind"],
        created_at=datetime.fromisoformat(logged["created_at"]),
        request=logged["request"],
        decision=logged["decision"],
        ruleset=logged["ruleset"],
        trace=logged.get("trace"),
        timings=logged.get("timings") or {},
        shadow=logged.get("shadow"),
        extra={"replayed": True},
    )
