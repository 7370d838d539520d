"""In-process stock store: the simulator's backend and the reference the other backends are held to.

Every method runs without awaiting anything in between, so on one event loop each call is atomic.

The levels live in a `StockCore`: every bucket as rows per SKU of integers per location (slots given in
the order SKUs and locations first appear), with `available = sellable - reserved` kept in step, and
synchronous operations on them. `MemoryStockStore`'s async methods check, plan and record through
`service.stock.ledger` and change levels only through the core's `add`, `hold` and `commit`; the simulator
calls the same core methods directly, on slot indexes, with no event loop and no records in between.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial

import msgspec

import service.stock.demand as demand
import service.stock.ledger as ledger
from service.stock.store import (
    EventResult,
    IdempotencyConflict,
    Levels,
    Reservation,
    ReservationNotFound,
    ReservationRequest,
    ReservationResult,
    ReservationStateError,
    ReservedLine,
    SnapshotRow,
    StockEvent,
    StockException,
)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


SlotLine = tuple[int, int, int]  # (sku slot, location slot, qty)


class StockCore:
    """The buckets of every (sku, location) by integer slots, and the operations that change them."""

    def __init__(self) -> None:
        self.skus: list[str] = []
        self.sku_slots: dict[str, int] = {}
        self.locations: list[str] = []
        self.location_slots: dict[str, int] = {}
        # bucket[sku slot][location slot]
        self.sellable: list[list[int]] = []
        self.reserved: list[list[int]] = []
        self.damaged: list[list[int]] = []
        self.return_pending: list[list[int]] = []
        self.in_transit: list[list[int]] = []
        self.available: list[list[int]] = []  # sellable - reserved (below 0 after an oversold outflow)
        # per SKU slot, the location slots any change has touched: what `get_levels` lists
        self.present: list[set[int]] = []

    def _rows(self) -> tuple[list[list[int]], ...]:
        return (
            self.sellable,
            self.reserved,
            self.damaged,
            self.return_pending,
            self.in_transit,
            self.available,
        )

    def sku_slot(self, sku: str) -> int:
        """The slot of a SKU, given the next one at its first appearance."""
        slot = self.sku_slots.get(sku)
        if slot is None:
            slot = self.sku_slots[sku] = len(self.skus)
            self.skus.append(sku)
            for rows in self._rows():
                rows.append([0] * len(self.locations))
            self.present.append(set())
        return slot

    def location_slot(self, location: str) -> int:
        """The slot of a location, given the next one at its first appearance."""
        slot = self.location_slots.get(location)
        if slot is None:
            slot = self.location_slots[location] = len(self.locations)
            self.locations.append(location)
            for rows in self._rows():
                for row in rows:
                    row.append(0)
        return slot

    def levels(self, sku: str, location: str) -> Levels:
        s = self.sku_slots.get(sku)
        loc = self.location_slots.get(location)
        if s is None or loc is None:
            return Levels()
        return Levels(
            self.sellable[s][loc],
            self.reserved[s][loc],
            self.damaged[s][loc],
            self.return_pending[s][loc],
            self.in_transit[s][loc],
        )

    def listed(self, sku: str) -> dict[str, Levels]:
        """The levels of every location a change has touched for this SKU, by location id."""
        s = self.sku_slots.get(sku)
        if s is None:
            return {}
        names = sorted(self.locations[loc] for loc in self.present[s])
        return {name: self.levels(sku, name) for name in names}

    def listed_available(self, sku: str) -> dict[str, int]:
        """`Levels.available` (never below 0) of the locations `listed` gives, by location id."""
        s = self.sku_slots.get(sku)
        if s is None:
            return {}
        row, names = self.available[s], self.locations
        return {names[loc]: max(0, row[loc]) for loc in sorted(self.present[s], key=names.__getitem__)}

    def add(
        self,
        sku: int,
        location: int,
        sellable: int = 0,
        reserved: int = 0,
        damaged: int = 0,
        return_pending: int = 0,
        in_transit: int = 0,
    ) -> None:
        """One signed change of the buckets of one (sku, location) slot pair."""
        if sellable:
            self.sellable[sku][location] += sellable
        if reserved:
            self.reserved[sku][location] += reserved
        if sellable != reserved:
            self.available[sku][location] += sellable - reserved
        if damaged:
            self.damaged[sku][location] += damaged
        if return_pending:
            self.return_pending[sku][location] += return_pending
        if in_transit:
            self.in_transit[sku][location] += in_transit
        self.present[sku].add(location)

    def apply(self, deltas: Sequence[ledger.Delta]) -> None:
        for d in deltas:
            self.add(
                self.sku_slot(d.sku),
                self.location_slot(d.location),
                d.sellable,
                d.reserved,
                d.damaged,
                d.return_pending,
                d.in_transit,
            )

    def slot_lines(self, lines: Sequence[ReservedLine]) -> list[SlotLine]:
        return [(self.sku_slot(x.sku), self.location_slot(x.location), x.qty) for x in lines]

    def hold(self, lines: Sequence[SlotLine], sign: int = 1) -> None:
        """reserved += sign * qty per line: a hold (+1), or its release or expiry (-1). No check."""
        reserved, available, present = self.reserved, self.available, self.present
        for sku, location, qty in lines:
            reserved[sku][location] += sign * qty
            available[sku][location] -= sign * qty
            present[sku].add(location)

    def try_hold(self, lines: Sequence[SlotLine]) -> bool:
        """Hold every line if each (sku, location) has the summed quantity available, else nothing."""
        available = self.available
        if len(lines) == 1:
            sku, location, qty = lines[0]
            if qty <= 0:
                raise ValueError(f"a held quantity must be above 0, got {qty}")
            if available[sku][location] < qty:
                return False
        else:
            summed: dict[tuple[int, int], int] = {}
            for sku, location, qty in lines:
                if qty <= 0:
                    raise ValueError(f"a held quantity must be above 0, got {qty}")
                summed[(sku, location)] = summed.get((sku, location), 0) + qty
            for (sku, location), qty in summed.items():
                if available[sku][location] < qty:
                    return False
        self.hold(lines)
        return True

    def commit(self, lines: Sequence[SlotLine]) -> None:
        """Held units leave: sellable and reserved both go down by qty per line (available stays)."""
        sellable, reserved, present = self.sellable, self.reserved, self.present
        for sku, location, qty in lines:
            sellable[sku][location] -= qty
            reserved[sku][location] -= qty
            present[sku].add(location)

    def total(self, bucket: str) -> int:
        """The sum of a bucket over every SKU and location."""
        rows: list[list[int]] = getattr(self, bucket)
        return sum(sum(row) for row in rows)


class MemoryStockStore:
    def __init__(self, clock: Clock = utc_now) -> None:
        self._clock = clock
        self.core = StockCore()
        self._events: set[str] = set()
        self._reservations: dict[str, Reservation] = {}
        self._keys: dict[str, tuple[str, str]] = {}
        self._expiry: list[tuple[datetime, str]] = []
        self._exceptions: list[StockException] = []
        self._demand: dict[demand.Pair, demand.DemandState] = {}
        self.demand = demand.LedgerDemand(self._demand_states, clock)
        # (day, location) -> units counted against its daily capacity; the claims of held reservations
        self._capacity: dict[tuple[str, str], int] = {}
        self._claims: dict[str, tuple[str, dict[str, int]]] = {}

    def _get(self, sku: str, location: str) -> Levels:
        return self.core.levels(sku, location)

    def _apply(self, deltas: Sequence[ledger.Delta]) -> None:
        self.core.apply(deltas)

    def _prune(self, now: datetime) -> int:
        count = 0
        while self._expiry and self._expiry[0][0] <= now:
            _, rid = heapq.heappop(self._expiry)
            held = self._reservations.get(rid)
            if held is not None and held.status == "held" and held.expires_at <= now:
                self.core.hold(self.core.slot_lines(held.lines), -1)
                self._give_back(rid)
                self._reservations[rid] = _with_status(held, "expired")
                count += 1
        return count

    def _give_back(self, reservation_id: str) -> None:
        """A held reservation's capacity claim no longer counts (released or expired)."""
        claim = self._claims.pop(reservation_id, None)
        if claim is not None:
            day, taken = claim
            for location, qty in taken.items():
                self._capacity[(day, location)] -= qty

    async def get_capacity_used(self, day: str, locations: Sequence[str]) -> dict[str, int]:
        ledger.validate_day(day, "day")
        self._prune(self._clock())
        return self._counted(day, locations)

    def _counted(self, day: str, locations: Sequence[str]) -> dict[str, int]:
        return {location: self._capacity.get((day, location), 0) for location in locations}

    async def get_levels(self, skus: Sequence[str]) -> dict[str, dict[str, Levels]]:
        self._prune(self._clock())
        return {sku: self.core.listed(sku) for sku in skus}

    async def get_available(self, skus: Sequence[str]) -> dict[str, dict[str, int]]:
        self._prune(self._clock())
        return {sku: self.core.listed_available(sku) for sku in skus}

    async def _demand_states(self, pairs: Sequence[demand.Pair]) -> dict[demand.Pair, demand.DemandState]:
        return {pair: self._demand[pair] for pair in pairs if pair in self._demand}

    async def put_snapshot(self, rows: Sequence[SnapshotRow]) -> int:
        ledger.validate_snapshot(rows)
        self._prune(self._clock())
        self._apply([ledger.snapshot_delta(row, self._get(row.sku, row.location)) for row in rows])
        return len(rows)

    async def apply_events(self, events: Sequence[StockEvent]) -> list[EventResult]:
        ledger.validate_events(events)
        now = self._clock()
        self._prune(now)
        results: list[EventResult] = []
        for event in events:
            if event.event_id in self._events:
                results.append(EventResult(event.event_id, "duplicate"))
                continue
            deltas, anomaly = ledger.event_effects(event, partial(self._get, event.sku), now)
            self._apply(deltas)
            self._events.add(event.event_id)
            if event.type == "sale":
                pair = (event.sku, event.location)
                at_ms = demand.to_ms(event.at or now)
                self._demand[pair] = demand.after_sale(self._demand.get(pair), event.qty, at_ms)
            if anomaly is not None:
                anomaly = _with_id(anomaly, len(self._exceptions) + 1)
                self._exceptions.append(anomaly)
            results.append(EventResult(event.event_id, "applied", anomaly))
        return results

    async def reserve(self, request: ReservationRequest) -> ReservationResult:
        ledger.validate_request(request)
        now = self._clock()
        self._prune(now)
        fingerprint = ledger.request_fingerprint(request)
        seen = self._keys.get(request.idempotency_key)
        if seen is not None:
            if seen[0] != fingerprint:
                raise IdempotencyConflict(
                    f"idempotency key {request.idempotency_key!r} was used with another request body"
                )
            found = self._reservations[seen[1]]
            return ReservationResult(found, tuple(ledger.replayed_short(request, found.lines)), replayed=True)
        lines = ledger.merge_lines(request.lines)
        claim = request.capacity
        left = None
        if claim is not None:
            used = self._counted(claim.day, [limit.location for limit in claim.limits])
            left = ledger.capacity_left(claim, used)
        granted, short = ledger.plan_reservation(lines, self._get, request.allow_partial, left)
        if not granted:
            return ReservationResult(None, tuple(short))
        reservation = Reservation(
            id=uuid.uuid4().hex,
            order_id=request.order_id,
            channel=request.channel,
            idempotency_key=request.idempotency_key,
            lines=tuple(granted),
            status="held",
            expires_at=now + timedelta(seconds=request.ttl_seconds),
            created_at=now,
        )
        self.core.hold(self.core.slot_lines(granted))
        taken = ledger.capacity_taken(claim, granted)
        if claim is not None and taken:
            for location, qty in taken.items():
                key = (claim.day, location)
                self._capacity[key] = self._capacity.get(key, 0) + qty
            self._claims[reservation.id] = (claim.day, taken)
        self._reservations[reservation.id] = reservation
        self._keys[request.idempotency_key] = (fingerprint, reservation.id)
        heapq.heappush(self._expiry, (reservation.expires_at, reservation.id))
        return ReservationResult(reservation, tuple(short))

    async def get_reservation(self, reservation_id: str) -> Reservation | None:
        self._prune(self._clock())
        return self._reservations.get(reservation_id)

    def _found(self, reservation_id: str) -> Reservation:
        self._prune(self._clock())
        found = self._reservations.get(reservation_id)
        if found is None:
            raise ReservationNotFound(f"no reservation {reservation_id!r}")
        return found

    async def commit(self, reservation_id: str) -> Reservation:
        found = self._found(reservation_id)
        if found.status == "committed":
            return found
        if found.status != "held":
            raise ReservationStateError(f"reservation {reservation_id} is {found.status}", found.status)
        self.core.commit(self.core.slot_lines(found.lines))
        # committed units stay counted against the day's capacity: the claim is simply settled
        self._claims.pop(reservation_id, None)
        self._reservations[reservation_id] = done = _with_status(found, "committed")
        return done

    async def release(self, reservation_id: str) -> Reservation:
        found = self._found(reservation_id)
        if found.status in ("released", "expired"):
            return found
        if found.status != "held":
            raise ReservationStateError(f"reservation {reservation_id} is {found.status}", found.status)
        self.core.hold(self.core.slot_lines(found.lines), -1)
        self._give_back(reservation_id)
        self._reservations[reservation_id] = done = _with_status(found, "released")
        return done

    async def sweep_expired(self, now: datetime | None = None) -> int:
        return self._prune(now or self._clock())

    async def list_exceptions(self, limit: int = 100) -> list[StockException]:
        return list(reversed(self._exceptions[-limit:]))

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _with_status(reservation: Reservation, status: str) -> Reservation:
    return msgspec.structs.replace(reservation, status=status)


def _with_id(anomaly: StockException, ident: int) -> StockException:
    return msgspec.structs.replace(anomaly, id=ident)
