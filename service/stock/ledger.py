"""The stock rules themselves, as pure functions shared by the memory and SQL backends and the rebuild.

An event or reservation step is turned into `Delta`s (signed changes per bucket) before anything is
written: backends apply deltas, the journal stores deltas, and a rebuild sums them, so the order in which
concurrent requests reach the journal never changes the rebuilt state. The Redis Lua scripts implement
the same rules; the contract suite holds them to it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime

import msgspec

from service.stock.store import (
    EVENT_TYPES,
    CapacityClaim,
    InvalidStockInput,
    Levels,
    ReservationLine,
    ReservationRequest,
    ReservedLine,
    ShortLine,
    SnapshotRow,
    StockEvent,
    StockException,
)

MAX_QTY = 1_000_000_000
MAX_TTL_SECONDS = 30 * 24 * 3600
MAX_ID_LENGTH = 64


class Delta(msgspec.Struct, frozen=True, array_like=True):
    """Signed change of every bucket of one (sku, location)."""

    sku: str
    location: str
    sellable: int = 0
    reserved: int = 0
    damaged: int = 0
    return_pending: int = 0
    in_transit: int = 0


def add(levels: Levels, delta: Delta) -> Levels:
    return Levels(
        sellable=levels.sellable + delta.sellable,
        reserved=levels.reserved + delta.reserved,
        damaged=levels.damaged + delta.damaged,
        return_pending=levels.return_pending + delta.return_pending,
        in_transit=levels.in_transit + delta.in_transit,
    )


_BAD_ID_CHARACTER = re.compile(r"[\s|{}]")


def _check_id(value: str, field: str) -> None:
    if not value or len(value) > MAX_ID_LENGTH:
        raise InvalidStockInput(field, f"must be 1 to {MAX_ID_LENGTH} characters")
    if _BAD_ID_CHARACTER.search(value):
        raise InvalidStockInput(field, "must not contain whitespace or any of | { }")


def _check_qty(value: int, field: str, minimum: int) -> None:
    if not minimum <= value <= MAX_QTY:
        raise InvalidStockInput(field, f"must be between {minimum} and {MAX_QTY}")


def validate_snapshot(rows: Sequence[SnapshotRow], prefix: str = "rows") -> None:
    for i, row in enumerate(rows):
        _check_id(row.sku, f"{prefix}[{i}].sku")
        _check_id(row.location, f"{prefix}[{i}].location")
        for bucket in ("sellable", "damaged", "return_pending", "in_transit"):
            _check_qty(getattr(row, bucket), f"{prefix}[{i}].{bucket}", 0)


def validate_events(events: Sequence[StockEvent], prefix: str = "events") -> None:
    for i, event in enumerate(events):
        where = f"{prefix}[{i}]"
        _check_id(event.event_id, f"{where}.event_id")
        _check_id(event.sku, f"{where}.sku")
        _check_id(event.location, f"{where}.location")
        if event.type not in EVENT_TYPES:
            raise InvalidStockInput(f"{where}.type", f"must be one of {', '.join(EVENT_TYPES)}")
        _check_qty(event.qty, f"{where}.qty", 0 if event.type == "adjustment" else 1)
        if event.type == "return_disposition" and event.disposition not in ("restock", "damage"):
            raise InvalidStockInput(
                f"{where}.disposition", "must be restock or damage for return_disposition"
            )
        if event.to_location is not None:
            if event.type != "transfer_out":
                raise InvalidStockInput(f"{where}.to_location", "only a transfer_out names a destination")
            _check_id(event.to_location, f"{where}.to_location")
            if event.to_location == event.location:
                raise InvalidStockInput(f"{where}.to_location", "must differ from location")


def validate_request(request: ReservationRequest) -> None:
    _check_id(request.order_id, "order_id")
    _check_id(request.channel, "channel")
    if not request.idempotency_key or len(request.idempotency_key) > 200:
        raise InvalidStockInput("idempotency_key", "must be 1 to 200 characters")
    if not request.lines:
        raise InvalidStockInput("lines", "must hold at least one line")
    if len(request.lines) > 200:
        raise InvalidStockInput("lines", "must hold at most 200 lines")
    if not 1 <= request.ttl_seconds <= MAX_TTL_SECONDS:
        raise InvalidStockInput("ttl_seconds", f"must be between 1 and {MAX_TTL_SECONDS}")
    if request.capacity is not None:
        validate_capacity(request.capacity)
    for i, line in enumerate(request.lines):
        # the field names are only built for a line that fails
        if not (_valid_id(line.sku) and _valid_id(line.location)) or not (
            1 <= line.qty <= MAX_QTY and 0 <= line.floor <= MAX_QTY
        ):
            _check_id(line.sku, f"lines[{i}].sku")
            _check_id(line.location, f"lines[{i}].location")
            _check_qty(line.qty, f"lines[{i}].qty", 1)
            _check_qty(line.floor, f"lines[{i}].floor", 0)


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def validate_day(day: str, field: str) -> None:
    """A business day as YYYY-MM-DD (a real date)."""
    try:
        valid = _DAY.fullmatch(day) is not None and date.fromisoformat(day).isoformat() == day
    except ValueError:
        valid = False
    if not valid:
        raise InvalidStockInput(field, "must be a date as YYYY-MM-DD")


def validate_capacity(claim: CapacityClaim) -> None:
    validate_day(claim.day, "capacity.day")
    if len(claim.limits) > 1000:
        raise InvalidStockInput("capacity.limits", "must hold at most 1000 locations")
    seen: set[str] = set()
    for i, limit in enumerate(claim.limits):
        _check_id(limit.location, f"capacity.limits[{i}].location")
        _check_qty(limit.limit, f"capacity.limits[{i}].limit", 0)
        if limit.location in seen:
            raise InvalidStockInput(f"capacity.limits[{i}].location", "names a location listed before")
        seen.add(limit.location)


def _valid_id(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_LENGTH and _BAD_ID_CHARACTER.search(value) is None


def merge_lines(lines: Sequence[ReservationLine]) -> list[ReservationLine]:
    """Sum lines of one (sku, location) so that the check sees the whole quantity; the strictest floor wins.

    The result is grouped by SKU (SKUs and, within one, locations in order of first appearance): the
    order in which every backend serves the lines, which matters only when lines share a location's
    daily capacity under a partial grant.
    """
    merged: dict[str, dict[str, ReservationLine]] = {}
    for line in lines:
        by_location = merged.setdefault(line.sku, {})
        seen = by_location.get(line.location)
        if seen is None:
            by_location[line.location] = line
        else:
            by_location[line.location] = ReservationLine(
                line.sku, line.location, seen.qty + line.qty, max(seen.floor, line.floor)
            )
    return [line for by_location in merged.values() for line in by_location.values()]


def request_fingerprint(request: ReservationRequest) -> str:
    """What 'the same body' means for an idempotency key: every field of the request, in order."""
    body = msgspec.json.encode(
        [request.order_id, request.channel, request.lines, request.ttl_seconds, request.allow_partial]
    )
    return hashlib.sha256(body).hexdigest()


def replayed_short(request: ReservationRequest, granted: Sequence[ReservedLine]) -> list[ShortLine]:
    """The short lines of a granted partial reservation, as its first answer named them.

    A partial grant takes everything a line could take, so what was granted is what was available.
    """
    taken: dict[tuple[str, str], int] = {}
    for line in granted:
        taken[(line.sku, line.location)] = taken.get((line.sku, line.location), 0) + line.qty
    return [
        ShortLine(line.sku, line.location, line.qty, taken.get((line.sku, line.location), 0))
        for line in merge_lines(request.lines)
        if taken.get((line.sku, line.location), 0) < line.qty
    ]


def takeable(levels: Levels, floor: int) -> int:
    """Units a line may take while leaving `floor` available."""
    return max(0, levels.sellable - levels.reserved - floor)


def plan_reservation(
    lines: Sequence[ReservationLine],
    levels: Callable[[str, str], Levels],
    allow_partial: bool,
    capacity_left: Mapping[str, int] | None = None,
) -> tuple[list[ReservedLine], list[ShortLine]]:
    """Decide what each (merged) line gets; all-or-nothing unless partial grants are allowed.

    `capacity_left` maps a location to the units its daily capacity still allows (absent: no limit);
    lines at one location share it, served in order.
    """
    left = dict(capacity_left or {})
    granted: list[ReservedLine] = []
    short: list[ShortLine] = []
    for line in lines:
        room = takeable(levels(line.sku, line.location), line.floor)
        cap = left.get(line.location)
        if cap is not None:
            room = min(room, max(0, cap))
        if room >= line.qty:
            granted.append(ReservedLine(line.sku, line.location, line.qty))
            if cap is not None:
                left[line.location] = cap - line.qty
            continue
        short.append(ShortLine(line.sku, line.location, line.qty, room))
        if allow_partial and room > 0:
            granted.append(ReservedLine(line.sku, line.location, room))
            if cap is not None:
                left[line.location] = cap - room
    if short and not allow_partial:
        return [], short
    return granted, short


def capacity_taken(claim: CapacityClaim | None, granted: Sequence[ReservedLine]) -> dict[str, int]:
    """The units a grant counts against each location its capacity claim lists (locations in claim order)."""
    if claim is None:
        return {}
    taken = dict.fromkeys((limit.location for limit in claim.limits), 0)
    for line in granted:
        if line.location in taken:
            taken[line.location] += line.qty
    return {location: qty for location, qty in taken.items() if qty}


def capacity_left(claim: CapacityClaim | None, used: Mapping[str, int]) -> dict[str, int]:
    """location -> units the claim's limit still allows, given what is already counted on its day."""
    if claim is None:
        return {}
    return {limit.location: max(0, limit.limit - used.get(limit.location, 0)) for limit in claim.limits}


def event_effects(
    event: StockEvent, levels: Callable[[str], Levels], at: datetime
) -> tuple[list[Delta], StockException | None]:
    """The deltas an event makes and the anomaly it reveals, given the levels before it (by location)."""
    sku, loc, qty = event.sku, event.location, event.qty
    before = levels(loc)
    exception: StockException | None = None

    def anomaly(kind: str, shortfall: int) -> StockException:
        return StockException(kind, sku, loc, event.event_id, qty, shortfall, event.at or at)

    if event.type in ("receipt", "transfer_in"):
        return [Delta(sku, loc, sellable=qty, in_transit=-min(qty, max(0, before.in_transit)))], None
    if event.type == "return":
        return [Delta(sku, loc, return_pending=qty)], None
    if event.type == "return_disposition":
        if before.return_pending < qty:
            exception = anomaly("return_without_pending", qty - max(0, before.return_pending))
        if event.disposition == "restock":
            return [Delta(sku, loc, sellable=qty, return_pending=-qty)], exception
        return [Delta(sku, loc, damaged=qty, return_pending=-qty)], exception
    if event.type == "adjustment":
        if qty < before.reserved:
            exception = anomaly("count_below_reserved", before.reserved - qty)
        return [Delta(sku, loc, sellable=qty - before.sellable)], exception
    # Outflows (sale, damage, transfer_out): the goods are gone, so they are recorded even when short.
    free = before.sellable - before.reserved
    if qty > free:
        exception = anomaly("negative_inventory", qty - max(0, free))
    if event.type == "sale":
        return [Delta(sku, loc, sellable=-qty)], exception
    if event.type == "damage":
        return [Delta(sku, loc, sellable=-qty, damaged=qty)], exception
    deltas = [Delta(sku, loc, sellable=-qty)]
    if event.to_location is not None:
        deltas.append(Delta(sku, event.to_location, in_transit=qty))
    return deltas, exception


def snapshot_delta(row: SnapshotRow, before: Levels) -> Delta:
    return Delta(
        row.sku,
        row.location,
        sellable=row.sellable - before.sellable,
        damaged=row.damaged - before.damaged,
        return_pending=row.return_pending - before.return_pending,
        in_transit=row.in_transit - before.in_transit,
    )


def hold_deltas(lines: Sequence[ReservedLine], sign: int) -> list[Delta]:
    """reserved += sign * qty per line (hold: +1, release or expiry: -1)."""
    return [Delta(line.sku, line.location, reserved=sign * line.qty) for line in lines]


def commit_deltas(lines: Sequence[ReservedLine]) -> list[Delta]:
    return [Delta(line.sku, line.location, sellable=-line.qty, reserved=-line.qty) for line in lines]
