"""The fan-out mark the database holds for every dispatcher (`outbox_mark`): however many dispatchers run
(a worker process each, on every host), a backlog is read about once and each event claimed once; a
dispatcher started later goes on from the mark; a round that finds another round holding it does nothing
and the dispatcher waits for its next round; a database migrated with events already in it gets them
fanned out."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.base import Base
from service.db.engine import create_engine, session_factory
from service.db.migrate import downgrade, upgrade
from service.db.models import OutboxDispatch, OutboxEvent, OutboxMark, Subscription
from service.db.sqlite_writer import SqliteWriters
from service.settings import DatabaseSettings
from service.workflow.dispatcher import DeliveryPolicy, Dispatcher
from service.workflow.fan_out import hold_mark
from tests.workflow.conftest import Clock
from tests.workflow.test_dispatcher import Sessions, _event_with_id, deliveries, subscribe, write_events
from tests.workflow.test_dispatcher_backlog import Statements, capture, lookups


async def two_subscriptions(sessions: Sessions, clock: Clock) -> None:
    await subscribe(sessions, "http://127.0.0.1:9/never-sent", clock)
    async with sessions() as session, session.begin():
        session.add(
            Subscription(
                id="audit",
                url="http://127.0.0.1:9/never-sent",
                events=["*"],
                secret="another-secret-for-tests",
                created_at=clock(),
                updated_at=clock(),
            )
        )


async def assert_each_claimed_and_delivered_once(sessions: Sessions, events: list[str]) -> None:
    async with sessions() as session:
        dispatched = (await session.execute(select(OutboxDispatch.event_id))).scalars().all()
    assert Counter(dispatched) == dict.fromkeys(events, 1)
    pairs = Counter((d.event_id, d.subscription_id) for d in await deliveries(sessions))
    assert pairs == {(name, sub): 1 for name in events for sub in ("warehouse", "audit")}


async def test_several_dispatchers_read_a_backlog_about_once_in_all_and_claim_each_event_once(
    sessions: Sessions, clock: Clock, db_engine: AsyncEngine
) -> None:
    """Three dispatchers (three worker processes) run their rounds together through 250 events (25
    transactions), 50 a round. Each round goes on from where the last one of any dispatcher left off, and
    a round that finds another holding the mark reads nothing: together they look the backlog up among the
    claimed about once, as one dispatcher alone does. With a mark each, every dispatcher looked up the
    events the others had claimed: 750 lookups and more."""
    if db_engine.dialect.name != "postgresql":
        pytest.skip("on SQLite the mark is an outbox id (the next test)")
    await two_subscriptions(sessions, clock)
    racers = [Dispatcher(sessions, DeliveryPolicy(fan_out_batch=50), clock=clock) for _ in range(3)]
    statements: Statements = []
    try:
        assert sum(await asyncio.gather(*(racer.fan_out() for racer in racers))) == 0  # the mark is set
        events = [name for _ in range(25) for name in await write_events(sessions, clock, 10)]
        stop = capture(db_engine, statements)
        try:
            claimed: list[int] = []
            for _ in range(30):  # rounds of all three together, until one claims nothing
                together = await asyncio.gather(*(racer.fan_out() for racer in racers))
                claimed += together
                if sum(together) == 0:
                    break
        finally:
            stop()
    finally:
        for racer in racers:
            await racer.close()
    assert sum(claimed) == 250
    await assert_each_claimed_and_delivered_once(sessions, events)
    assert await lookups(db_engine, statements) <= 250


async def test_two_processes_on_a_sqlite_file_go_on_from_one_mark(
    sessions: Sessions, clock: Clock, db_engine: AsyncEngine
) -> None:
    """Two dispatchers, each with a writer of its own on the file (two processes), take turns through ten
    events, three a round: each round goes on past the highest id the other's round claimed, and each
    event is claimed once. An event written by hand below the mark after the first round (id 15) shows
    which rows the rounds look at: none looks at it. With a mark each, the second dispatcher's first round
    looked at every event, and walked every event the other had claimed."""
    if db_engine.dialect.name != "sqlite":
        pytest.skip("a SQLite file's writers")
    await two_subscriptions(sessions, clock)
    events = [await _event_with_id(sessions, clock, row_id, f"e-{row_id}") for row_id in range(10, 101, 10)]
    processes = [
        Dispatcher(sessions, DeliveryPolicy(fan_out_batch=3), clock=clock, sqlite_writers=SqliteWriters())
        for _ in range(2)
    ]
    try:
        claimed = [await processes[0].fan_out()]
        await _event_with_id(sessions, clock, 15, "e-15")
        for turn in range(5):
            claimed.append(await processes[(turn + 1) % 2].fan_out())
    finally:
        for process in processes:
            await process.close()
    assert claimed == [3, 3, 3, 1, 0, 0]
    await assert_each_claimed_and_delivered_once(sessions, events)


async def test_a_dispatcher_started_after_another_fanned_out_does_not_read_the_claimed_events_again(
    sessions: Sessions, clock: Clock, db_engine: AsyncEngine
) -> None:
    """A restart, or a worker started later: its first round goes on from the database's mark and looks
    up none of the 250 events claimed before it started. With a mark in each dispatcher's memory, a new
    one looked up every event of the outbox."""
    if db_engine.dialect.name != "postgresql":
        pytest.skip(
            "a SQLite file's rounds go through its writer (the rows a round looks at: test_dispatcher)"
        )
    await two_subscriptions(sessions, clock)
    events = [name for _ in range(25) for name in await write_events(sessions, clock, 10)]
    first = Dispatcher(sessions, DeliveryPolicy(fan_out_batch=50), clock=clock)
    try:
        assert [await first.fan_out() for _ in range(6)] == [50, 50, 50, 50, 50, 0]
    finally:
        await first.close()
    statements: Statements = []
    restarted = Dispatcher(sessions, DeliveryPolicy(fan_out_batch=50), clock=clock)
    try:
        stop = capture(db_engine, statements)
        try:
            assert await restarted.fan_out() == 0
        finally:
            stop()
        [newer] = await write_events(sessions, clock, 1)
        assert await restarted.fan_out() == 1
    finally:
        await restarted.close()
    assert await lookups(db_engine, statements) <= 1
    await assert_each_claimed_and_delivered_once(sessions, [*events, newer])


async def test_a_round_that_finds_the_mark_held_does_nothing_and_the_dispatcher_waits_its_interval(
    sessions: Sessions, clock: Clock, db_engine: AsyncEngine
) -> None:
    """While another dispatcher's round holds the mark (here a connection holding its row), a round does no
    fan-out and reads no event, and the dispatcher does not take that for a full round: it waits for its
    next one (or a wake) instead of trying again at once."""
    if db_engine.dialect.name != "postgresql":
        pytest.skip("a SQLite round waits for the file's write lock like any write")
    ids = await write_events(sessions, clock, 3)
    dispatcher = Dispatcher(sessions, DeliveryPolicy(retention=None), clock=clock)
    rounds: list[str] = []
    went_on = [asyncio.Event(), asyncio.Event()]  # a round has gone on to its deliveries: the first, the next

    def seen(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        if "FROM outbox_mark" in statement:
            rounds.append("fan-out")
        elif "outbox_events" in statement:
            rounds.append("read")
        elif "FROM deliveries" in statement:
            rounds.append("deliveries")
            went_on[min(rounds.count("deliveries"), 2) - 1].set()

    async with db_engine.connect() as holder:
        await holder.execute(select(OutboxMark.mark).with_for_update())  # another round holds the mark
        event.listen(db_engine.sync_engine, "before_cursor_execute", seen)
        running = asyncio.ensure_future(dispatcher.run(3600))
        try:
            await asyncio.wait_for(went_on[0].wait(), 30)
            for _ in range(5):  # the loop runs the dispatcher's task meanwhile: a spinning one comes round
                await holder.execute(text("SELECT 1"))
            assert rounds == ["fan-out", "deliveries"]
            await holder.rollback()
            dispatcher.wake()
            await asyncio.wait_for(went_on[1].wait(), 30)  # the next round, woken, has fanned out
        finally:
            event.remove(db_engine.sync_engine, "before_cursor_execute", seen)
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await dispatcher.close()
    assert rounds[2:4] == ["fan-out", "read"]
    async with sessions() as session:
        dispatched = set((await session.execute(select(OutboxDispatch.event_id))).scalars())
    assert dispatched == set(ids)


async def test_a_round_left_idle_holding_the_mark_is_ended_and_another_dispatcher_takes_the_mark(
    sessions: Sessions, clock: Clock, db_engine: AsyncEngine
) -> None:
    """A round whose process froze after it took the mark (its transaction idle, its connection open)
    does not hold fan-out from every dispatcher: the server ends its transaction after `mark_idle_seconds`
    and the next round of another dispatcher takes the mark."""
    if db_engine.dialect.name != "postgresql":
        pytest.skip("a SQLite round waits for the file's write lock like any write")
    policy = DeliveryPolicy(mark_idle_seconds=0.2)
    ids = await write_events(sessions, clock, 2)
    other = Dispatcher(sessions, policy, clock=clock)
    frozen = sessions()
    try:
        await frozen.begin()
        assert await hold_mark(frozen, True, policy.mark_idle_seconds) == (True, None)
        assert await other.fan_out() == 0  # held by the frozen round
        claimed = 0
        for _ in range(200):  # until the server has ended the frozen round's transaction
            claimed = await other.fan_out()
            if claimed:
                break
            await asyncio.sleep(0.05)
    finally:
        await other.close()
        with contextlib.suppress(Exception):  # its connection is gone
            await frozen.close()
    assert claimed == 2
    async with sessions() as session:
        dispatched = set((await session.execute(select(OutboxDispatch.event_id))).scalars())
    assert dispatched == set(ids)


async def test_a_database_migrated_with_events_and_claims_in_it_fans_out_the_rest_once(
    db_engine: AsyncEngine, sessions: Sessions, clock: Clock
) -> None:
    """An existing deployment: events, some fanned out, before the mark's table existed. The migration
    leaves the mark empty and the first round looks at every event: it claims those without their dispatch
    row, once, and stores the mark."""
    await downgrade(db_engine, "0026_bounded_listings")
    events = await write_events(sessions, clock, 5)
    async with db_engine.begin() as connection:
        for name in events[:2]:
            await connection.execute(
                text("INSERT INTO outbox_dispatch (event_id, at) VALUES (:name, :at)"),
                {"name": name, "at": clock()},
            )
    await upgrade(db_engine)
    async with sessions() as session:
        assert (await session.execute(select(OutboxMark.id, OutboxMark.mark))).all() == [(1, None)]
    dispatchers = [Dispatcher(sessions, DeliveryPolicy(), clock=clock) for _ in range(2)]
    try:
        assert [await d.fan_out() for d in dispatchers] == [3, 0]
    finally:
        for d in dispatchers:
            await d.close()
    async with sessions() as session:
        dispatched = (await session.execute(select(OutboxDispatch.event_id))).scalars().all()
        mark: Any = await session.scalar(select(OutboxMark.mark))
        highest = await session.scalar(select(OutboxEvent.id).order_by(OutboxEvent.id.desc()).limit(1))
    assert Counter(dispatched) == dict.fromkeys(events, 1)
    assert mark is not None
    if db_engine.dialect.name == "sqlite":
        assert int(mark) == highest


async def test_through_the_engine_on_an_in_memory_database_a_round_makes_the_marks_row_and_goes_on_from_it(
    clock: Clock,
) -> None:
    """An in-memory SQLite database (no file, so no writer: the round goes through the engine) whose schema
    was made from the models, without the migration's row: the first round makes the row, and the rounds
    go on from the mark it holds."""
    engine = create_engine(DatabaseSettings(url="sqlite+aiosqlite:///:memory:"))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        sessions = session_factory(engine)
        await two_subscriptions(sessions, clock)
        events = await write_events(sessions, clock, 5)
        dispatchers = [Dispatcher(sessions, DeliveryPolicy(fan_out_batch=2), clock=clock) for _ in range(2)]
        try:
            claimed = [await dispatchers[turn % 2].fan_out() for turn in range(4)]
            async with sessions() as session:
                mark = await session.scalar(select(OutboxMark.mark))
                highest = await session.scalar(select(func.max(OutboxEvent.id)))
        finally:
            for d in dispatchers:
                await d.close()
        assert claimed == [2, 2, 1, 0]
        assert mark is not None and int(mark) == highest
        await assert_each_claimed_and_delivered_once(sessions, events)
    finally:
        await engine.dispose()
