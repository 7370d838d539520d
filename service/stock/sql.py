"""SQL stock store (SQLite through aiosqlite, PostgreSQL through asyncpg): the embedded default.

A reservation is one transaction of conditional updates
(`UPDATE ... SET reserved = reserved + q WHERE sellable - reserved - q >= floor`), all or nothing.
Safety across worker processes: on PostgreSQL the conditional UPDATE takes the row lock and re-checks
its condition; on SQLite every write transaction starts with BEGIN IMMEDIATE, so two processes can
never both read and then write. Lines are locked in (sku, location) order to keep deadlocks rare, and
a deadlock or serialization failure is retried.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy import insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

import service.stock.demand as demand
import service.stock.ledger as ledger
from service.db.engine import create_engine
from service.settings import DatabaseSettings
from service.stock.journal import exception_values
from service.stock.memory import Clock, utc_now
from service.stock.sql_rows import (
    CAPACITY,
    EVENTS,
    EXCEPTIONS,
    LEVELS,
    RESERVATIONS,
    claimed,
    from_ms,
    immediate_transactions,
    level_at,
    read_exceptions,
    replace_status,
    reservation_of,
    reserved_lines,
    sale_rate,
    sqlstate,
    stored_claim,
    to_ms,
    unavailable,
)
from service.stock.store import (
    CapacityClaim,
    EventResult,
    IdempotencyConflict,
    Levels,
    Reservation,
    ReservationLine,
    ReservationNotFound,
    ReservationRequest,
    ReservationResult,
    ReservationStateError,
    ReservedLine,
    ShortLine,
    SnapshotRow,
    StockEvent,
    StockException,
    StockUnavailable,
)

T = TypeVar("T")
log = logging.getLogger("retail_policy.stock")
RETRYABLE_SQLSTATES = {"40001", "40P01"}
BUCKET_COLUMNS = ("sellable", "reserved", "damaged", "return_pending", "in_transit")


class _Short(Exception):
    """Raised inside a reservation transaction to roll it back when a line cannot be taken."""


class _Replay(Exception):
    def __init__(self, result: ReservationResult) -> None:
        self.result = result


class SqlStockStore:
    def __init__(self, url: str, pool_size: int = 10, clock: Clock = utc_now) -> None:
        self._clock = clock
        settings = DatabaseSettings(url=url, pool_size=pool_size)
        self._sqlite = make_url(url).get_backend_name() == "sqlite"
        self._writer = create_engine(settings)
        if self._sqlite:
            immediate_transactions(self._writer)
            # Reads go through a second engine whose transactions stay deferred (readers beside the writer).
            self._reader = create_engine(settings)
        else:
            self._reader = self._writer
        self.demand = demand.LedgerDemand(self._demand_states, clock)

    # ---- plumbing -------------------------------------------------------------------------------

    def _insert(self, table: Any) -> Any:
        return sqlite.insert(table) if self._sqlite else postgresql.insert(table)

    async def _write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        for attempt in range(8):
            try:
                async with self._writer.begin() as conn:
                    return await work(conn)
            except sa_exc.DBAPIError as error:
                if sqlstate(error) in RETRYABLE_SQLSTATES and attempt < 7:
                    await asyncio.sleep(0.005 * (attempt + 1))
                    continue
                if isinstance(error, sa_exc.IntegrityError):
                    raise
                raise unavailable(error) from error
            except (OSError, ConnectionError) as error:
                raise unavailable(error) from error
        raise AssertionError("unreachable")

    async def _read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        try:
            async with self._reader.connect() as conn:
                return await work(conn)
        except sa_exc.DBAPIError as error:
            raise unavailable(error) from error
        except (OSError, ConnectionError) as error:
            raise unavailable(error) from error

    async def _apply(
        self,
        conn: AsyncConnection,
        deltas: Sequence[ledger.Delta],
        rate: tuple[demand.Pair, demand.DemandState] | None = None,
    ) -> None:
        """Add deltas to the level rows, creating rows that do not exist yet; `rate` sets one pair's demand."""
        for delta in deltas:
            values: dict[str, Any] = {"sku": delta.sku, "location": delta.location}
            values.update({col: getattr(delta, col) for col in BUCKET_COLUMNS})
            stmt = self._insert(LEVELS).values(values)
            set_: dict[str, Any] = {
                col: getattr(LEVELS.c, col) + getattr(stmt.excluded, col) for col in BUCKET_COLUMNS
            }
            if rate is not None and rate[0] == (delta.sku, delta.location):
                # In the same statement as the sale's delta: a sale costs no extra round trip.
                state = {"demand_rate": rate[1].rate, "demand_at_ms": rate[1].at_ms}
                stmt = self._insert(LEVELS).values({**values, **state})
                set_.update(state)
            stmt = stmt.on_conflict_do_update(index_elements=["sku", "location"], set_=set_)
            await conn.execute(stmt)

    async def _levels(
        self, conn: AsyncConnection, keys: Sequence[tuple[str, str]], lock: bool
    ) -> dict[tuple[str, str], Levels]:
        rows = await self._rows(conn, keys, lock)
        return {key: Levels(*(int(r[c]) for c in BUCKET_COLUMNS)) for key, r in rows.items()}

    async def _rows(
        self, conn: AsyncConnection, keys: Sequence[tuple[str, str]], lock: bool
    ) -> dict[tuple[str, str], Any]:
        if not keys:
            return {}
        query = select(LEVELS).where(tuple_(LEVELS.c.sku, LEVELS.c.location).in_(list(keys)))
        if lock:
            query = query.order_by(LEVELS.c.sku, LEVELS.c.location).with_for_update()
        return {(r["sku"], r["location"]): r for r in (await conn.execute(query)).mappings().all()}

    async def _prune(self, conn: AsyncConnection, now_ms: int) -> int:
        """Expire every held reservation past its time, inside the caller's transaction."""
        due = (
            await conn.execute(
                select(RESERVATIONS.c.id, RESERVATIONS.c.lines, RESERVATIONS.c.capacity)
                .where(RESERVATIONS.c.status == "held", RESERVATIONS.c.expires_at_ms <= now_ms)
                .order_by(RESERVATIONS.c.id)
            )
        ).all()
        count = 0
        for rid, lines, capacity in due:
            changed = await conn.execute(
                update(RESERVATIONS)
                .where(RESERVATIONS.c.id == rid, RESERVATIONS.c.status == "held")
                .values(status="expired")
            )
            if changed.rowcount == 1:
                await self._apply(conn, ledger.hold_deltas(reserved_lines(lines), -1))
                await self._count_capacity(conn, capacity, -1)
                count += 1
        return count

    async def _count_capacity(self, conn: AsyncConnection, capacity: Any, sign: int) -> None:
        """Add (+1) or give back (-1) a reservation's stored capacity claim."""
        if not capacity:
            return
        day = capacity["day"]
        for location, qty in sorted(capacity["taken"]):
            stmt = self._insert(CAPACITY).values(day=day, location=location, used=sign * int(qty))
            stmt = stmt.on_conflict_do_update(
                index_elements=["day", "location"], set_={"used": CAPACITY.c.used + stmt.excluded.used}
            )
            await conn.execute(stmt)

    async def _capacity_used(
        self, conn: AsyncConnection, day: str, locations: Sequence[str], lock: bool = False
    ) -> dict[str, int]:
        if not locations:
            return {}
        query = select(CAPACITY.c.location, CAPACITY.c.used).where(
            CAPACITY.c.day == day, CAPACITY.c.location.in_(list(locations))
        )
        if lock:
            query = query.order_by(CAPACITY.c.location).with_for_update()
        found = {str(location): int(used) for location, used in (await conn.execute(query)).all()}
        return {location: found.get(location, 0) for location in locations}

    async def _has_due(self, now_ms: int) -> bool:
        async def probe(conn: AsyncConnection) -> bool:
            query = (
                select(RESERVATIONS.c.id)
                .where(RESERVATIONS.c.status == "held", RESERVATIONS.c.expires_at_ms <= now_ms)
                .limit(1)
            )
            return (await conn.execute(query)).first() is not None

        return await self._read(probe)

    async def _prune_if_due(self) -> None:
        now_ms = to_ms(self._clock())
        if await self._has_due(now_ms):
            await self._write(partial(self._prune, now_ms=now_ms))

    # ---- reads ----------------------------------------------------------------------------------

    async def get_levels(self, skus: Sequence[str]) -> dict[str, dict[str, Levels]]:
        await self._prune_if_due()

        async def load(conn: AsyncConnection) -> dict[str, dict[str, Levels]]:
            out: dict[str, dict[str, Levels]] = {sku: {} for sku in skus}
            if not skus:
                return out
            query = (
                select(LEVELS).where(LEVELS.c.sku.in_(list(skus))).order_by(LEVELS.c.sku, LEVELS.c.location)
            )
            for r in (await conn.execute(query)).mappings():
                out[r["sku"]][r["location"]] = Levels(*(int(r[c]) for c in BUCKET_COLUMNS))
            return out

        return await self._read(load)

    async def get_available(self, skus: Sequence[str]) -> dict[str, dict[str, int]]:
        levels = await self.get_levels(skus)
        return {sku: {loc: level.available for loc, level in rows.items()} for sku, rows in levels.items()}

    async def get_capacity_used(self, day: str, locations: Sequence[str]) -> dict[str, int]:
        ledger.validate_day(day, "day")
        await self._prune_if_due()
        return await self._read(partial(self._capacity_used, day=day, locations=list(locations)))

    async def get_reservation(self, reservation_id: str) -> Reservation | None:
        await self._prune_if_due()

        async def load(conn: AsyncConnection) -> Reservation | None:
            row = (
                (await conn.execute(select(RESERVATIONS).where(RESERVATIONS.c.id == reservation_id)))
                .mappings()
                .first()
            )
            return None if row is None else reservation_of(row)

        return await self._read(load)

    async def list_exceptions(self, limit: int = 100) -> list[StockException]:
        try:
            return await read_exceptions(self._reader, limit)
        except sa_exc.DBAPIError as error:
            raise unavailable(error) from error

    # ---- writes ---------------------------------------------------------------------------------

    async def put_snapshot(self, rows: Sequence[SnapshotRow]) -> int:
        ledger.validate_snapshot(rows)
        now_ms = to_ms(self._clock())

        async def work(conn: AsyncConnection) -> int:
            await self._prune(conn, now_ms)
            for row in sorted(rows, key=lambda r: (r.sku, r.location)):
                stmt = self._insert(LEVELS).values(
                    sku=row.sku,
                    location=row.location,
                    sellable=row.sellable,
                    reserved=0,
                    damaged=row.damaged,
                    return_pending=row.return_pending,
                    in_transit=row.in_transit,
                )
                stmt = stmt.on_conflict_do_update(
                    index_elements=["sku", "location"],
                    set_={c: getattr(stmt.excluded, c) for c in BUCKET_COLUMNS if c != "reserved"},
                )
                await conn.execute(stmt)
            return len(rows)

        return await self._write(work)

    async def apply_events(self, events: Sequence[StockEvent]) -> list[EventResult]:
        ledger.validate_events(events)
        now = self._clock()

        async def work(conn: AsyncConnection) -> list[EventResult]:
            await self._prune(conn, to_ms(now))
            results: list[EventResult] = []
            for ev in events:
                claimed = await conn.execute(
                    self._insert(EVENTS)
                    .values(event_id=ev.event_id, sku=ev.sku, type=ev.type, applied_at_ms=to_ms(now))
                    .on_conflict_do_nothing(index_elements=["event_id"])
                )
                if claimed.rowcount == 0:
                    results.append(EventResult(ev.event_id, "duplicate"))
                    continue
                places = [(ev.sku, ev.location)] + ([(ev.sku, ev.to_location)] if ev.to_location else [])
                rows = await self._rows(conn, places, lock=True)
                before = {key: Levels(*(int(r[c]) for c in BUCKET_COLUMNS)) for key, r in rows.items()}
                deltas, anomaly = ledger.event_effects(ev, partial(level_at, before, ev.sku), now)
                rate = None
                if ev.type == "sale":
                    rate = sale_rate(rows.get((ev.sku, ev.location)), ev, demand.to_ms(ev.at or now))
                await self._apply(conn, deltas, rate)
                if anomaly is not None:
                    values = exception_values(anomaly)
                    inserted = await conn.execute(
                        insert(EXCEPTIONS).values(values).returning(EXCEPTIONS.c.id)
                    )
                    anomaly = StockException(**{**values, "id": int(inserted.scalar_one())})
                results.append(EventResult(ev.event_id, "applied", anomaly))
            return results

        return await self._write(work)

    async def _demand_states(self, pairs: Sequence[demand.Pair]) -> dict[demand.Pair, demand.DemandState]:
        async def load(conn: AsyncConnection) -> dict[demand.Pair, demand.DemandState]:
            out: dict[demand.Pair, demand.DemandState] = {}
            # Chunked: SQLite and asyncpg both cap the number of bound parameters per statement.
            for start in range(0, len(pairs), 500):
                query = select(
                    LEVELS.c.sku, LEVELS.c.location, LEVELS.c.demand_rate, LEVELS.c.demand_at_ms
                ).where(
                    tuple_(LEVELS.c.sku, LEVELS.c.location).in_(list(pairs[start : start + 500])),
                    LEVELS.c.demand_at_ms.is_not(None),
                )
                for sku, location, rate, at_ms in await conn.execute(query):
                    out[(sku, location)] = demand.DemandState(float(rate), int(at_ms))
            return out

        return await self._read(load)

    async def reserve(self, request: ReservationRequest) -> ReservationResult:
        ledger.validate_request(request)
        fingerprint = ledger.request_fingerprint(request)
        lines = ledger.merge_lines(request.lines)
        for _attempt in range(3):
            now = self._clock()
            try:
                return await self._write(partial(self._reserve, request, lines, fingerprint, now))
            except _Replay as replay:
                return replay.result
            except _Short:
                return await self._short_answer(request, lines)
            except sa_exc.IntegrityError:
                # Another request inserted the same idempotency key first: answer as its replay.
                continue
        raise StockUnavailable("reservation kept colliding on its idempotency key", retry_after=1)

    async def _reserve(
        self,
        request: ReservationRequest,
        lines: list[ReservationLine],
        fingerprint: str,
        now: datetime,
        conn: AsyncConnection,
    ) -> ReservationResult:
        await self._prune(conn, to_ms(now))
        seen = (
            (
                await conn.execute(
                    select(RESERVATIONS).where(RESERVATIONS.c.idempotency_key == request.idempotency_key)
                )
            )
            .mappings()
            .first()
        )
        if seen is not None:
            if seen["fingerprint"] != fingerprint:
                raise IdempotencyConflict(
                    f"idempotency key {request.idempotency_key!r} was used with another request body"
                )
            found = reservation_of(seen)
            named = tuple(ledger.replayed_short(request, found.lines))
            raise _Replay(ReservationResult(found, named, replayed=True))
        short: list[ShortLine] = []
        claim = request.capacity
        # rows are locked in (sku, location) order, then capacity rows by location, to keep deadlocks rare
        ordered = sorted(lines, key=lambda line: (line.sku, line.location))
        if request.allow_partial:
            before = await self._levels(conn, [(line.sku, line.location) for line in ordered], lock=True)
            left = None
            if claim is not None:
                used = await self._capacity_used(conn, claim.day, claimed(claim), lock=True)
                left = ledger.capacity_left(claim, used)
            granted, short = ledger.plan_reservation(
                lines, lambda s, loc: before.get((s, loc)) or Levels(), True, left
            )
            if not granted:
                return ReservationResult(None, tuple(short))
            await self._apply(conn, ledger.hold_deltas(granted, 1))
        else:
            for line in ordered:
                taken = await conn.execute(
                    update(LEVELS)
                    .where(
                        LEVELS.c.sku == line.sku,
                        LEVELS.c.location == line.location,
                        LEVELS.c.sellable - LEVELS.c.reserved - line.qty >= line.floor,
                    )
                    .values(reserved=LEVELS.c.reserved + line.qty)
                )
                if taken.rowcount != 1:
                    raise _Short()
            granted = [ReservedLine(line.sku, line.location, line.qty) for line in lines]
        counted = ledger.capacity_taken(claim, granted)
        stored = stored_claim(claim, counted) if claim is not None and counted else None
        if claim is not None and stored is not None:
            if not request.allow_partial:
                await self._take_capacity(conn, claim, counted)
            else:
                await self._count_capacity(conn, stored, 1)
        reservation = Reservation(
            id=uuid.uuid4().hex,
            order_id=request.order_id,
            channel=request.channel,
            idempotency_key=request.idempotency_key,
            lines=tuple(granted),
            status="held",
            expires_at=from_ms(to_ms(now + timedelta(seconds=request.ttl_seconds))),
            created_at=from_ms(to_ms(now)),
        )
        await conn.execute(
            insert(RESERVATIONS).values(
                id=reservation.id,
                order_id=reservation.order_id,
                channel=reservation.channel,
                idempotency_key=reservation.idempotency_key,
                fingerprint=fingerprint,
                status="held",
                lines=[[line.sku, line.location, line.qty] for line in granted],
                expires_at_ms=to_ms(reservation.expires_at),
                created_at_ms=to_ms(reservation.created_at),
                capacity=stored,
            )
        )
        return ReservationResult(reservation, tuple(short))

    async def _take_capacity(
        self, conn: AsyncConnection, claim: CapacityClaim, counted: dict[str, int]
    ) -> None:
        """Count the units against each location's limit, or roll the whole reservation back."""
        limits = {limit.location: limit.limit for limit in claim.limits}
        for location in sorted(counted):
            qty = counted[location]
            row = self._insert(CAPACITY).values(day=claim.day, location=location, used=0)
            await conn.execute(row.on_conflict_do_nothing(index_elements=["day", "location"]))
            taken = await conn.execute(
                update(CAPACITY)
                .where(
                    CAPACITY.c.day == claim.day,
                    CAPACITY.c.location == location,
                    CAPACITY.c.used + qty <= limits[location],
                )
                .values(used=CAPACITY.c.used + qty)
            )
            if taken.rowcount != 1:
                raise _Short()

    async def _short_answer(
        self, request: ReservationRequest, lines: list[ReservationLine]
    ) -> ReservationResult:
        claim = request.capacity

        async def load(conn: AsyncConnection) -> tuple[dict[tuple[str, str], Levels], dict[str, int] | None]:
            levels = await self._levels(conn, [(line.sku, line.location) for line in lines], lock=False)
            if claim is None:
                return levels, None
            used = await self._capacity_used(conn, claim.day, claimed(claim))
            return levels, ledger.capacity_left(claim, used)

        now_levels, left = await self._read(load)
        _, short = ledger.plan_reservation(
            lines, lambda s, loc: now_levels.get((s, loc)) or Levels(), False, left
        )
        if not short:
            # Stock came back between the failed update and this read; the refusal still stands.
            short = [
                ShortLine(
                    line.sku,
                    line.location,
                    line.qty,
                    ledger.takeable(now_levels[(line.sku, line.location)], line.floor),
                )
                for line in lines
                if (line.sku, line.location) in now_levels
            ][:1]
        return ReservationResult(None, tuple(short))

    async def _finish(self, reservation_id: str, target: str) -> Reservation:
        now_ms = to_ms(self._clock())

        async def work(conn: AsyncConnection) -> Reservation:
            await self._prune(conn, now_ms)
            row = (
                (
                    await conn.execute(
                        select(RESERVATIONS).where(RESERVATIONS.c.id == reservation_id).with_for_update()
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                raise ReservationNotFound(f"no reservation {reservation_id!r}")
            found = reservation_of(row)
            done_states = ("committed",) if target == "committed" else ("released", "expired")
            if found.status in done_states:
                return found
            if found.status != "held":
                raise ReservationStateError(f"reservation {reservation_id} is {found.status}", found.status)
            deltas = (
                ledger.commit_deltas(found.lines)
                if target == "committed"
                else ledger.hold_deltas(found.lines, -1)
            )
            await self._apply(conn, sorted(deltas, key=lambda d: (d.sku, d.location)))
            if target != "committed":
                # a commit keeps its units counted: they were dispatched that day
                await self._count_capacity(conn, row["capacity"], -1)
            await conn.execute(
                update(RESERVATIONS).where(RESERVATIONS.c.id == reservation_id).values(status=target)
            )
            return replace_status(found, target)

        return await self._write(work)

    async def commit(self, reservation_id: str) -> Reservation:
        return await self._finish(reservation_id, "committed")

    async def release(self, reservation_id: str) -> Reservation:
        return await self._finish(reservation_id, "released")

    async def sweep_expired(self, now: datetime | None = None) -> int:
        now_ms = to_ms(now or self._clock())
        # A read first: an idle sweeper must not take the write lock every interval.
        if not await self._has_due(now_ms):
            return 0
        return await self._write(partial(self._prune, now_ms=now_ms))

    async def ping(self) -> None:
        async def probe(conn: AsyncConnection) -> None:
            await conn.exec_driver_sql("SELECT 1")

        await self._read(probe)

    async def close(self) -> None:
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()
