"""In-process stock store: the simulator's backend and the reference the other backends are held to.

Every method runs without awaiting anything in between, so on one event loop each call is atomic.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial

import msgspec

from service.stock import demand, ledger
from service.stock.store import (
    EventResult,
    IdempotencyConflict,
    Levels,
    Reservation,
    ReservationNotFound,
    ReservationRequest,
    ReservationResult,
    ReservationStateError,
    SnapshotRow,
    StockEvent,
    StockException,
)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class MemoryStockStore:
    def __init__(self, clock: Clock = utc_now) -> None:
        self._clock = clock
        self._levels: dict[tuple[str, str], Levels] = {}
        self._by_sku: dict[str, set[str]] = {}
        self._events: set[str] = set()
        self._reservations: dict[str, Reservation] = {}
        self._keys: dict[str, tuple[str, str]] = {}
        self._expiry: list[tuple[datetime, str]] = []
        self._exceptions: list[StockException] = []
        self._demand: dict[demand.Pair, demand.DemandState] = {}
        self.demand = demand.LedgerDemand(self._demand_states, clock)

    def _get(self, sku: str, location: str) -> Levels:
        return self._levels.get((sku, location)) or Levels()

    def _apply(self, deltas: Sequence[ledger.Delta]) -> None:
        for delta in deltas:
            self._levels[(delta.sku, delta.location)] = ledger.add(
                self._get(delta.sku, delta.location), delta
            )
            self._by_sku.setdefault(delta.sku, set()).add(delta.location)

    def _prune(self, now: datetime) -> int:
        count = 0
        while self._expiry and self._expiry[0][0] <= now:
            _, rid = heapq.heappop(self._expiry)
            held = self._reservations.get(rid)
            if held is not None and held.status == "held" and held.expires_at <= now:
                self._apply(ledger.hold_deltas(held.lines, -1))
                self._reservations[rid] = _with_status(held, "expired")
                count += 1
        return count

    async def get_levels(self, skus: Sequence[str]) -> dict[str, dict[str, Levels]]:
        self._prune(self._clock())
        return {
            sku: {loc: self._levels[(sku, loc)] for loc in sorted(self._by_sku.get(sku, ()))} for sku in skus
        }

    async def get_available(self, skus: Sequence[str]) -> dict[str, dict[str, int]]:
        levels = await self.get_levels(skus)
        return {sku: {loc: level.available for loc, level in rows.items()} for sku, rows in levels.items()}

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
        granted, short = ledger.plan_reservation(lines, self._get, request.allow_partial)
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
        self._apply(ledger.hold_deltas(granted, 1))
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
        self._apply(ledger.commit_deltas(found.lines))
        self._reservations[reservation_id] = done = _with_status(found, "committed")
        return done

    async def release(self, reservation_id: str) -> Reservation:
        found = self._found(reservation_id)
        if found.status in ("released", "expired"):
            return found
        if found.status != "held":
            raise ReservationStateError(f"reservation {reservation_id} is {found.status}", found.status)
        self._apply(ledger.hold_deltas(found.lines, -1))
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
