"""Redis backend: the journal checkpoint (service/stock/checkpoint.py). Old journal days folded into the
checkpoint and taken out of the journal (day partitions dropped on PostgreSQL, rows deleted on SQLite)
leave the rebuild's result as it was: the state Redis had before the wipe, the state a pass over the whole
journal gives; writers running meanwhile, late entries of old days and a second maintenance run lose
nothing and fold nothing twice; idempotency holds after a rebuild from the checkpoint."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextvars import ContextVar
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.engine import create_engine
from service.db.partitions import JOURNAL, maintain, maintain_sync
from service.settings import DatabaseSettings
from service.stock.checkpoint import read_state
from service.stock.recovery import rebuild_redis
from service.stock.redis import RedisStockStore, reservation_id
from service.stock.store import (
    CapacityClaim,
    CapacityLimit,
    ReservationLine,
    ReservationRequest,
    SnapshotRow,
    StockEvent,
)
from tests.contract.stock_backends import FakeClock, open_backend

SKUS = ("A", "B", "C")
LOCATIONS = ("DC", "S1")
DAYS = 5  # days of activity, from the clock's first day
RETENTION = 2
BUCKETS = ("s:", "r:", "d:", "p:", "t:")  # journal days kept: the first DAYS - RETENTION - 1 days are folded


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[RedisStockStore]:
    name = "redis" if request.param == "sqlite" else "redis+postgresql"
    async with open_backend(name, request, clock) as opened:
        assert isinstance(opened, RedisStockStore)
        yield opened


# how far the clock of the current task is from the test's clock: a writer of late entries (a change stamped
# on an old day, journaled now) runs beside writers of today's
SHIFT: ContextVar[timedelta] = ContextVar("shift", default=timedelta(0))


class ShiftedClock(FakeClock):
    def __call__(self) -> datetime:
        return self.now + SHIFT.get()


@pytest.fixture
def clock() -> FakeClock:
    return ShiftedClock()


def day_of(clock: FakeClock, offset: int = 0) -> date:
    return (clock.now + timedelta(days=offset)).date()


def ask(key: str, sku: str, location: str, qty: int, ttl: int, day: date | None = None) -> ReservationRequest:
    claim = None if day is None else CapacityClaim(day.isoformat(), (CapacityLimit(location, 1000),))
    return ReservationRequest(
        f"order-{key}", "web", key, (ReservationLine(sku, location, qty),), ttl, capacity=claim
    )


async def one_day(store: RedisStockStore, clock: FakeClock, n: int, late: str | None) -> str:
    """Day n's changes: events (receipts, sales with their demand rates, a transfer), reservations held,
    committed, released, expiring, with and without a capacity claim; `late`, yesterday's reservation, is
    committed today. Answers today's reservation that tomorrow commits."""
    today = clock.now.date()
    sku = SKUS[n % len(SKUS)]
    await store.apply_events(
        [
            StockEvent(f"r{n}", "receipt", sku, "DC", 10 + n),
            StockEvent(f"s{n}", "sale", SKUS[(n + 1) % 3], "S1", 1 + n % 2),
            StockEvent(f"t{n}", "transfer_out", sku, "DC", 2, to_location="S1"),
        ]
    )
    rids: dict[str, str] = {}
    for kind, ttl, claim in [
        ("held", 30 * 86400, today),
        ("commit", 600, today),
        ("release", 600, None),
        ("expire", 60, today),
        ("late", 3 * 86400, None),
    ]:
        result = await store.reserve(ask(f"{kind}{n}", sku, LOCATIONS[n % 2], 1 + n % 3, ttl, claim))
        assert result.reservation is not None
        rids[kind] = result.reservation.id
    await store.commit(rids["commit"])
    await store.release(rids["release"])
    if late is not None:
        await store.commit(late)
    clock.advance(3600)
    await store.apply_events([StockEvent(f"s{n}b", "sale", SKUS[(n + 1) % 3], "S1", 1)])
    return rids["late"]


async def activity(store: RedisStockStore, clock: FakeClock, days: int = DAYS) -> None:
    await store.put_snapshot([SnapshotRow(s, loc, 100) for s in SKUS for loc in LOCATIONS])
    late: str | None = None
    start = clock.now
    for n in range(days):
        clock.now = start + timedelta(days=n)
        late = await one_day(store, clock, n, late)


async def contents(client: Any, prefix: str) -> dict[str, Any]:
    """Every key of the store but its marker and lock, by its value read in a form that does not depend
    on the order of writes (buckets at 0 left out), and whether it has a time to live."""
    found: dict[str, Any] = {}
    for raw in sorted(await client.keys(f"{prefix}*")):
        key = raw.decode()
        if key == f"{prefix}rebuilding" or key == f"{prefix}built" or key.startswith(f"{prefix}built:"):
            continue  # the markers (one per slot on a cluster) say when and from where they were rebuilt
        if key.endswith(":ready"):
            continue  # a SKU's ready availability answer: written by reads and reservations, none by the rebuild
        kind = (await client.type(raw)).decode()
        value: Any
        if kind == "hash":
            value = {k.decode(): v.decode() for k, v in (await client.hgetall(raw)).items()}
            if key.startswith(f"{prefix}stock:"):
                # a bucket the scripts never touched is absent, the rebuild writes it as 0: the same level
                value = {k: v for k, v in value.items() if not (k[:2] in BUCKETS and v == "0")}
        elif kind == "set":
            value = sorted(m.decode() for m in await client.smembers(raw))
        elif kind == "zset":
            value = [(m.decode(), s) for m, s in await client.zrange(raw, 0, -1, withscores=True)]
        else:
            value = (await client.get(raw)).decode()
        found[key] = (kind, value, await client.pttl(raw) > 0)
    return found


async def state(store: RedisStockStore) -> dict[str, Any]:
    """The store's contents with expired holds pruned, as the rebuild leaves them: the sweeper prunes the
    SKUs' indexes (and on one node the capacity days'); on a cluster a capacity day's are pruned when the
    day is next counted, as here."""
    await store.sweep_expired()
    prefix = f"{store.keys.prefix}capu:{{"
    for raw in await store.client.keys(f"{prefix}*"):
        await store.get_capacity_used(raw.decode().removeprefix(prefix).rstrip("}"), list(LOCATIONS))
    return await contents(store.client, store.keys.prefix)


async def give_days_partitions(store: RedisStockStore, clock: FakeClock, days: range) -> None:
    """On PostgreSQL, partitions for these days of the clock's (as a service running then made them);
    the other days' entries land in the default partition."""
    engine = store.journal.engine
    if engine.dialect.name == "postgresql":
        for n in days:
            await maintain(engine, day_of(clock, n), ahead_days=0, retention_days=0)


async def journal_days(engine: AsyncEngine) -> dict[str, int]:
    """The journal's rows per partition (the table's name on SQLite)."""
    where = "tableoid::regclass::text" if engine.dialect.name == "postgresql" else "'stock_journal'"
    async with engine.connect() as conn:
        rows = await conn.execute(text(f"SELECT {where}, count(*) FROM stock_journal GROUP BY 1"))
        return {str(name): int(n) for name, n in rows}


async def folded_total(engine: AsyncEngine) -> tuple[int, int]:
    """The checkpoint's folded entries and the journal's rows."""
    async with engine.connect() as conn:
        header = (await conn.execute(text("SELECT entries FROM stock_checkpoint WHERE id = 1"))).scalar_one()
        rows = (await conn.execute(text("SELECT count(*) FROM stock_journal"))).scalar_one()
    return int(header), int(rows)


async def test_a_rebuild_from_the_checkpoint_gives_the_state_redis_had_and_a_full_replay_gives(
    store: RedisStockStore, clock: FakeClock
) -> None:
    await rebuilds_the_same_from_the_checkpoint(store, clock)


async def test_on_a_cluster_too(request: pytest.FixtureRequest, clock: FakeClock) -> None:
    """Reservations with a capacity claim are taken in steps on several slots there (their intents close
    with their journal entries)."""
    async with open_backend("redis-cluster", request, clock) as opened:
        assert isinstance(opened, RedisStockStore)
        await rebuilds_the_same_from_the_checkpoint(opened, clock)


async def rebuilds_the_same_from_the_checkpoint(store: RedisStockStore, clock: FakeClock) -> None:
    start = clock.now
    await give_days_partitions(store, clock, range(0, 1))  # day 0 partitioned, day 1 in the default
    await activity(store, clock)
    engine = store.journal.engine
    before = await state(store)
    await rebuild_redis(store)  # the whole journal
    full = await state(store)
    assert full == before
    total = sum((await journal_days(engine)).values())

    today = (start + timedelta(days=DAYS - 1)).date()
    cutoff = today - timedelta(days=RETENTION)
    report = await maintain(engine, today, ahead_days=0, retention_days=0, journal_retention_days=RETENTION)
    assert report.folded > 0
    if engine.dialect.name == "postgresql":
        assert report.dropped == [JOURNAL.partition(start.date())]
        assert report.trimmed > 0  # day 1's rows, from the default partition
    folded, left = await folded_total(engine)
    assert (folded, folded + left) == (report.folded, total)
    async with engine.connect() as conn:
        oldest = (await conn.execute(text("SELECT min(at_ms) FROM stock_journal"))).scalar_one()
    assert oldest >= int(JOURNAL.bound(cutoff))

    await rebuild_redis(store)  # from the checkpoint and the days left
    assert await state(store) == before
    replayed = await read_state(engine)
    assert (replayed.checkpoint_entries, replayed.journal_entries) == (folded, left)

    # nothing left to fold: a second run changes nothing
    again = await maintain(engine, today, ahead_days=0, retention_days=0, journal_retention_days=RETENTION)
    assert (again.folded, again.dropped) == (0, [])
    assert await folded_total(engine) == (folded, left)


async def test_idempotency_holds_after_a_rebuild_from_the_checkpoint(
    store: RedisStockStore, clock: FakeClock
) -> None:
    start = clock.now
    await give_days_partitions(store, clock, range(0, DAYS))
    await activity(store, clock)
    first = await store.get_reservation(reservation_id("held0"))
    today = (start + timedelta(days=DAYS - 1)).date()
    report = await maintain(store.journal.engine, today, 0, 0, journal_retention_days=RETENTION)
    assert report.folded > 0
    await store.wipe()
    await rebuild_redis(store)
    levels = await store.get_levels(list(SKUS))
    # day 0's event ids and idempotency keys are in the checkpoint only
    results = await store.apply_events(
        [StockEvent("r0", "receipt", "A", "DC", 10), StockEvent("s0", "sale", "B", "S1", 1)]
    )
    assert [r.status for r in results] == ["duplicate", "duplicate"]
    again = await store.reserve(ask("held0", "A", "DC", 1, 30 * 86400, start.date()))
    assert again.replayed and again.reservation == first
    assert await store.get_levels(list(SKUS)) == levels


async def test_writers_during_the_checkpoint_and_a_second_host_lose_nothing(
    store: RedisStockStore, clock: FakeClock
) -> None:
    """Two hosts' maintenance at once (the second finds nothing or what came late), beside a writer of
    today's changes and one of late entries of day 0 (into the rows being folded)."""
    start = clock.now
    await give_days_partitions(store, clock, range(1, 4))  # day 0 in the default partition
    await activity(store, clock, days=3)
    engine = store.journal.engine
    total = sum((await journal_days(engine)).values())
    today = (start + timedelta(days=3)).date()  # days 0 and 1 are folded
    other = create_engine(DatabaseSettings(url=engine.url.render_as_string(hide_password=False)))

    async def writer(name: str, shift: timedelta) -> int:
        SHIFT.set(shift)
        for i in range(20):
            await store.apply_events([StockEvent(f"{name}-{i}", "receipt", SKUS[i % 3], "DC", 1)])
            result = await store.reserve(ask(f"{name}-{i}", SKUS[i % 3], "S1", 1, 30 * 86400))
            assert result.reservation is not None
            if i % 2:
                await store.commit(result.reservation.id)
        return 20 + 20 + 10

    try:
        one, two, today_writes, late_writes = await asyncio.gather(
            maintain(engine, today, 0, 0, journal_retention_days=1),
            maintain(other, today, 0, 0, journal_retention_days=1),
            writer("today", timedelta(0)),
            writer("late", start - clock.now),
        )
    finally:
        await other.dispose()
    folded, left = await folded_total(engine)
    assert one.folded + two.folded == folded > 0
    assert folded + left == total + today_writes + late_writes
    before = await state(store)
    await rebuild_redis(store)
    assert await state(store) == before
    # whatever of the late entries came after the fold goes with the next run
    await maintain(engine, today, 0, 0, journal_retention_days=1)
    async with engine.connect() as conn:
        oldest = (await conn.execute(text("SELECT min(at_ms) FROM stock_journal"))).scalar_one()
    assert oldest >= int(JOURNAL.bound(today - timedelta(days=1)))
    await rebuild_redis(store)
    assert await state(store) == before


async def test_entries_committed_while_the_checkpoint_is_open_and_late_ones_are_kept(
    store: RedisStockStore, clock: FakeClock
) -> None:
    """The checkpoint's transaction held open between its fold and its commit: a writer of today's entries
    and a late entry of a folded day (which lands beside the folded rows) go on, and both stay in the
    journal for the rebuild and the next fold."""
    start = clock.now
    await give_days_partitions(store, clock, range(2, 3))  # made beforehand: the run makes none
    await activity(store, clock, days=3)
    engine = store.journal.engine
    today = (start + timedelta(days=2)).date()
    async with engine.connect() as conn:
        transaction = await conn.begin()
        report = await conn.run_sync(maintain_sync, today, 0, 0, 1)
        assert report.folded > 0
        # today's changes (the open fold blocks no write of today on PostgreSQL: only the old day
        # partitions are locked); SQLite has one writer at a time, so its writes wait for the commit
        if engine.dialect.name == "postgresql":
            await store.apply_events([StockEvent("during", "receipt", "A", "DC", 5)])
        await transaction.commit()
    await store.apply_events([StockEvent("after", "receipt", "A", "DC", 5)])
    # a late entry of the first day (a change stamped then, journaled now)
    now = clock.now
    clock.now = start
    late = await store.reserve(ask("late-entry", "B", "DC", 2, 30 * 86400))
    clock.now = now
    assert late.reservation is not None
    before = await state(store)
    await rebuild_redis(store)
    assert await state(store) == before
    # the next run folds the late entry alone
    folded_before, _ = await folded_total(engine)
    next_run = await maintain(engine, today, 0, 0, journal_retention_days=1)
    assert next_run.folded == 1 and next_run.dropped == []
    assert (await folded_total(engine))[0] == folded_before + 1
    await rebuild_redis(store)
    assert await state(store) == before


async def test_a_rebuild_waits_for_an_open_checkpoint_on_postgresql(
    request: pytest.FixtureRequest, clock: FakeClock
) -> None:
    """The rebuild's read holds the maintenance's advisory lock shared: it starts once the checkpoint
    committed and reads the new checkpoint with the days left, never the old one without the days."""
    async with open_backend("redis+postgresql", request, clock) as opened:
        assert isinstance(opened, RedisStockStore)
        start = clock.now
        await give_days_partitions(opened, clock, range(0, 3))
        await activity(opened, clock, days=3)
        engine = opened.journal.engine
        before = await state(opened)
        today = (start + timedelta(days=2)).date()
        async with engine.connect() as conn:
            transaction = await conn.begin()
            await conn.run_sync(maintain_sync, today, 0, 0, 1)
            reading = asyncio.create_task(read_state(engine))
            await waiting_on_the_advisory_lock(engine)
            assert not reading.done()
            await transaction.commit()
        read = await reading
        folded, left = await folded_total(engine)
        assert (read.checkpoint_entries, read.journal_entries) == (folded, left)
        await rebuild_redis(opened)
        assert await state(opened) == before


async def waiting_on_the_advisory_lock(engine: AsyncEngine) -> None:
    """Until a session waits for an advisory lock (polled: the wait is the event awaited)."""
    async with asyncio.timeout(10):
        while True:
            async with engine.connect() as conn:
                waiting = await conn.execute(
                    text("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                )
                if waiting.first() is not None:
                    return
            await asyncio.sleep(0.01)


def test_the_fold_adds_in_any_order() -> None:
    """Entries folded in two parts, in either order, give the fold of all of them in one pass."""
    from service.stock.fold import JournalFold

    entries: list[dict[str, Any]] = [
        {
            "id": 1,
            "kind": "reserve",
            "ref": "r1",
            "deltas": [["A", "DC", 0, 2, 0, 0, 0]],
            "record": {"seq": 3},
        },
        {
            "id": 2,
            "kind": "commit",
            "ref": "r1",
            "deltas": [["A", "DC", -2, -2, 0, 0, 0]],
            "record": {"seq": 4},
        },
        {
            "id": 3,
            "kind": "event",
            "ref": "e1",
            "deltas": [["B", "S1", -1, 0, 0, 0, 0]],
            "record": {"sku": "B", "seq": 5, "demand": ["S1", "1.5", 100, 2]},
        },
        {
            "id": 4,
            "kind": "event",
            "ref": "e2",
            "deltas": [["B", "S1", -1, 0, 0, 0, 0]],
            "record": {"sku": "B", "seq": 6, "demand": ["S1", "0.5", 90, 1]},
        },
        {"id": 5, "kind": "release", "ref": "r2", "deltas": [], "record": {"seq": 8}},
        {"id": 6, "kind": "reserve", "ref": "r2", "deltas": [], "record": {"seq": 7}},
    ]
    whole = JournalFold()
    for entry in entries:
        whole.add(entry)
    for split in range(len(entries) + 1):
        for first, second in [(entries[:split], entries[split:]), (entries[split:], entries[:split])]:
            older, newer = JournalFold(), JournalFold()
            for entry in first:
                older.add(entry)
            for entry in second:
                newer.add(entry)
            older.merge(newer)
            assert older == whole, split
    assert whole.reservations == {"r1": [{"seq": 3}, "committed"], "r2": [{"seq": 7}, "released"]}
    assert whole.rates == {("B", "S1"): ["1.5", 100, 2]}
    assert (whole.entries, whole.last_id, whole.writes) == (6, 6, 8)
