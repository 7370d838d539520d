"""The webhook dispatcher against a real HTTP receiver on loopback: failures, timeouts, recovery, restarts
and racing dispatchers lose no event and send none of them twice from the dispatcher's records."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from service.db.base import aware
from service.db.engine import create_engine, session_factory
from service.db.models import Delivery, ExceptionRecord, OutboxDispatch, OutboxEvent, OutboxMark, Subscription
from service.db.sqlite_writer import SqliteWriters
from service.settings import DatabaseSettings
from service.workflow.dispatcher import DeliveryPolicy, Dispatcher, retry
from service.workflow.outbox import add_event
from service.workflow.subscriptions import verify
from tests.workflow.conftest import Clock
from tests.workflow.receiver import Received, receiver

Sessions = async_sessionmaker[AsyncSession]
SECRET = "s3cret-for-tests"
FAST = DeliveryPolicy(max_attempts=5, base_delay_seconds=5, max_delay_seconds=60, timeout_seconds=2)


async def subscribe(sessions: Sessions, url: str, clock: Clock, events: list[str] | None = None) -> None:
    async with sessions() as session, session.begin():
        session.add(
            Subscription(
                id="warehouse",
                url=url,
                events=events or ["case.*", "transfer.shipped"],
                secret=SECRET,
                created_at=clock(),
                updated_at=clock(),
            )
        )


async def write_events(
    sessions: Sessions, clock: Clock, count: int, kind: str = "case.approved"
) -> list[str]:
    async with sessions() as session, session.begin():
        return [
            add_event(session, kind, f"transfer:t-{n}", {"case": {"id": f"c-{n}"}}, clock())
            for n in range(count)
        ]


async def deliveries(sessions: Sessions) -> list[Delivery]:
    async with sessions() as session:
        return list((await session.execute(select(Delivery).order_by(Delivery.event_id))).scalars())


def signed_correctly(request: Received) -> bool:
    headers = request.headers
    return verify(
        SECRET,
        headers["x-retail-policy-timestamp"],
        headers["x-retail-policy-event-id"],
        request.body,
        headers["x-retail-policy-signature"],
    )


async def test_every_event_arrives_signed_through_errors_timeouts_and_recovery(
    sessions: Sessions, clock: Clock
) -> None:
    tries: Counter[str] = Counter()

    def flaky(request: Received) -> int | None:
        event_id = request.headers["x-retail-policy-event-id"]
        tries[event_id] += 1
        return {1: 500, 2: None}.get(tries[event_id], 200)  # an error, then no answer, then fine

    async with receiver(flaky) as hooks:
        await subscribe(sessions, hooks.url, clock)
        ids = await write_events(sessions, clock, 4)
        await write_events(sessions, clock, 1, kind="markdown.price_changed")  # nobody subscribed
        dispatcher = Dispatcher(sessions, FAST, clock=clock)
        try:
            for _ in range(6):
                await dispatcher.run_once()
                clock.advance(seconds=60)
        finally:
            await dispatcher.close()
    assert all(signed_correctly(request) for request in hooks.requests)
    delivered = [r.event["id"] for r in hooks.requests if tries[r.event["id"]] >= 3]
    assert set(delivered) == set(ids)
    assert Counter(r.event["id"] for r in hooks.requests) == dict.fromkeys(ids, 3)
    rows = await deliveries(sessions)
    assert sorted(row.event_id for row in rows) == sorted(ids)  # one record per event, no others
    assert {(row.status, row.attempts, row.last_error) for row in rows} == {("delivered", 3, None)}
    assert {r.event["payload"]["case"]["id"] for r in hooks.requests} == {"c-0", "c-1", "c-2", "c-3"}


async def test_a_failed_attempt_waits_its_jittered_backoff_before_the_next(
    sessions: Sessions, clock: Clock
) -> None:
    draws = iter([0.0, 1.0 - 2**-53])
    async with receiver(lambda request: 503) as hooks:
        await subscribe(sessions, hooks.url, clock)
        await write_events(sessions, clock, 1)
        dispatcher = Dispatcher(sessions, FAST, clock=clock, draw=lambda: next(draws))
        try:
            start = clock()
            await dispatcher.run_once()
            [row] = await deliveries(sessions)
            assert aware(row.next_attempt_at) == start + timedelta(seconds=2.5)  # 5 s x (0.5 + 0.5 x 0.0)
            assert (row.status, row.last_error) == ("pending", "HTTP 503")
            clock.advance(seconds=2.4)
            assert await dispatcher.deliver_due() == 0  # not yet due
            clock.advance(seconds=0.1)
            assert await dispatcher.deliver_due() == 1
            [row] = await deliveries(sessions)
            assert row.attempts == 2
            assert aware(row.next_attempt_at) - clock() > timedelta(seconds=9.99)  # 10 s x (0.5 + 0.5 x ~1.0)
        finally:
            await dispatcher.close()
    assert len(hooks.requests) == 2


async def test_after_the_last_attempt_a_delivery_is_dead_raises_an_exception_and_can_be_retried(
    sessions: Sessions, clock: Clock
) -> None:
    answers = {"status": 500}
    async with receiver(lambda request: answers["status"]) as hooks:
        await subscribe(sessions, hooks.url, clock)
        [event_id] = await write_events(sessions, clock, 1)
        dispatcher = Dispatcher(sessions, FAST, clock=clock)
        try:
            for _ in range(FAST.max_attempts + 2):
                await dispatcher.run_once()
                clock.advance(seconds=60)
            [row] = await deliveries(sessions)
            assert (row.status, row.attempts, row.last_error) == ("dead", FAST.max_attempts, "HTTP 500")
            async with sessions() as session:
                [exception] = (await session.execute(select(ExceptionRecord))).scalars().all()
            assert (exception.kind, exception.key, exception.state) == ("failed_delivery", row.id, "open")
            assert exception.detail["event_id"] == event_id

            answers["status"] = 204
            async with sessions() as session, session.begin():
                await retry(session, row.id, clock())
            await dispatcher.run_once()
        finally:
            await dispatcher.close()
    [row] = await deliveries(sessions)
    assert (row.status, row.attempts) == ("delivered", 1)
    async with sessions() as session:
        [exception] = (await session.execute(select(ExceptionRecord))).scalars().all()
    assert exception.state == "resolved"
    assert len(hooks.requests) == FAST.max_attempts + 1


async def test_a_dispatcher_stopped_mid_delivery_loses_nothing_when_another_starts_on_the_database(
    database_url: str, clock: Clock
) -> None:
    first_try: set[str] = set()

    def hangs_once(request: Received) -> int | None:
        event_id = request.headers["x-retail-policy-event-id"]
        if event_id in first_try:
            return 200
        first_try.add(event_id)
        return None  # the first dispatcher never hears back

    engine = create_engine(DatabaseSettings(url=database_url))
    sessions = session_factory(engine)
    async with receiver(hangs_once) as hooks:
        await subscribe(sessions, hooks.url, clock)
        ids = await write_events(sessions, clock, 3)
        policy = DeliveryPolicy(timeout_seconds=30)
        stopped = Dispatcher(sessions, policy, clock=clock)
        round_ = asyncio.ensure_future(stopped.run_once())
        await hooks.wait_for(3)  # every delivery is in flight
        round_.cancel()
        await asyncio.gather(round_, return_exceptions=True)
        await stopped.close()
        await engine.dispose()  # the process is gone

        engine = create_engine(DatabaseSettings(url=database_url))
        restarted = Dispatcher(session_factory(engine), policy, clock=clock)
        try:
            assert await restarted.deliver_due() == 0  # the lapsed process still holds the leases
            clock.now += policy.lease + timedelta(seconds=1)
            assert await restarted.deliver_due() == 3
        finally:
            await restarted.close()
            rows = await deliveries(session_factory(engine))
            await engine.dispose()
    assert sorted(row.event_id for row in rows) == sorted(ids)
    assert {(row.status, row.attempts) for row in rows} == {("delivered", 1)}
    assert Counter(r.event["id"] for r in hooks.requests) == dict.fromkeys(ids, 2)


async def test_racing_dispatchers_fan_out_and_send_each_delivery_once(
    sessions: Sessions, clock: Clock
) -> None:
    async with receiver(lambda request: 200) as hooks:
        await subscribe(sessions, hooks.url, clock)
        ids = await write_events(sessions, clock, 20)
        racers = [Dispatcher(sessions, FAST, clock=clock) for _ in range(3)]
        try:
            await asyncio.gather(*(racer.run_once() for racer in racers))
            await asyncio.gather(*(racer.run_once() for racer in racers))
        finally:
            for racer in racers:
                await racer.close()
    assert Counter(r.event["id"] for r in hooks.requests) == dict.fromkeys(ids, 1)
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Delivery)) == 20


async def test_an_unreachable_receiver_and_an_oversized_event_are_recorded_without_internals(
    sessions: Sessions, clock: Clock
) -> None:
    async with receiver(lambda request: 200) as hooks:
        closed_url = hooks.url
    await subscribe(sessions, closed_url, clock)  # nothing listens there any more
    [small] = await write_events(sessions, clock, 1)
    async with sessions() as session, session.begin():
        big = add_event(session, "case.opened", "transfer:t-big", {"blob": "x" * 300_000}, clock())
    dispatcher = Dispatcher(sessions, FAST, clock=clock)
    try:
        await dispatcher.run_once()
    finally:
        await dispatcher.close()
    found = {row.event_id: row for row in await deliveries(sessions)}
    assert (found[small].status, found[small].last_error) == ("pending", "connection failed")
    assert (found[big].status, found[big].attempts) == ("dead", 1)
    assert found[big].last_error == f"event body over {FAST.max_body_bytes} bytes"


async def _event_with_id(
    sessions: Sessions, clock: Clock, row_id: int, name: str, txid: int | None = None
) -> str:
    """An event written by hand with id `row_id` (and on PostgreSQL, with `txid`, as if written by that
    transaction: 1 is one long finished)."""
    async with sessions() as session, session.begin():
        event = OutboxEvent(
            id=row_id,
            event_id=name,
            kind="case.approved",
            subject=f"transfer:{name}",
            payload={},
            created_at=clock(),
        )
        if txid is not None:
            event.txid = txid
        session.add(event)
    return name


async def test_an_event_committed_after_a_higher_id_is_still_delivered(
    sessions: Sessions, clock: Clock, db_engine: AsyncEngine
) -> None:
    """On PostgreSQL an id is taken when the row is inserted and the transaction may commit after a later
    one's: the next round finds it, since its transaction was still running when the round before read."""
    if db_engine.dialect.name == "sqlite":
        pytest.skip("SQLite commits events in id order (the next test)")
    async with receiver(lambda request: 200) as hooks:
        await subscribe(sessions, hooks.url, clock)
        dispatcher = Dispatcher(sessions, FAST, clock=clock)
        try:
            [first] = await write_events(sessions, clock, 1)
            await dispatcher.run_once()  # the first round looks at every event
            async with sessions() as slow, slow.begin():  # takes its event's id first, commits last
                late = add_event(slow, "case.approved", "transfer:t-late", {}, clock())
                await slow.flush()
                [newer] = await write_events(sessions, clock, 1)
                await dispatcher.run_once()
                assert [r.event["id"] for r in hooks.requests] == [first, newer]
            await dispatcher.run_once()  # no time passes: the late one is found all the same
        finally:
            await dispatcher.close()
    assert Counter(r.event["id"] for r in hooks.requests) == dict.fromkeys([first, newer, late], 1)
    async with sessions() as session:
        ids = {
            event_id: row_id
            for event_id, row_id in await session.execute(select(OutboxEvent.event_id, OutboxEvent.id))
        }
    assert ids[late] < ids[newer]


async def test_rounds_look_past_the_databases_mark_only_and_at_every_event_without_one(
    sessions: Sessions, clock: Clock, db_engine: AsyncEngine
) -> None:
    """Rounds look past the mark only, never at the whole outbox again, however long they run and
    whichever dispatcher runs them: one started later (a restart, another worker) goes on from the mark
    the database holds. An event written by hand below the mark (an id below the last seen; on PostgreSQL
    also a transaction long finished) shows which rows a round looks at; without a mark (a database just
    migrated to having one) a round looks at every event and finds it."""
    postgres = db_engine.dialect.name == "postgresql"
    await subscribe(sessions, "http://127.0.0.1:9/never-sent", clock)
    first = await _event_with_id(sessions, clock, 100, "e-100")
    dispatcher = Dispatcher(sessions, DeliveryPolicy(), clock=clock)
    try:
        assert await dispatcher.fan_out() == 1  # no mark yet: the round looks at every event
        assert await dispatcher.fan_out() == 0  # nothing new: it stays past 100
        await _event_with_id(sessions, clock, 50, "e-50", txid=1 if postgres else None)
        clock.advance(seconds=10)
        assert await dispatcher.fan_out() == 0  # past the mark only, however long since it looked at all
        newer = await _event_with_id(sessions, clock, 101, "e-101")
        assert await dispatcher.fan_out() == 1
    finally:
        await dispatcher.close()
    restarted = Dispatcher(sessions, DeliveryPolicy(), clock=clock)
    try:
        assert await restarted.fan_out() == 0  # from the database's mark: the late row is below it
        async with sessions() as session, session.begin():
            await session.execute(update(OutboxMark).values(mark=None))
        assert await restarted.fan_out() == 1  # the late row, found by a look at every event
    finally:
        await restarted.close()
    assert sorted(d.event_id for d in await deliveries(sessions)) == sorted([first, newer, "e-50"])


async def claimed_outbox(db_engine: AsyncEngine) -> None:
    """20,000 events (PostgreSQL), written by 20 transactions of 1,000, all claimed before (by this
    dispatcher's earlier life, or another's); no statistics gathered."""
    async with db_engine.connect() as connection:
        for batch in range(20):
            await connection.execute(
                text(
                    "INSERT INTO outbox_events (event_id, kind, subject, payload, created_at) SELECT"
                    " 'old-' || :batch || '-' || n, 'case.approved', 's', '{}', now()"
                    " FROM generate_series(1, 1000) AS n"
                ),
                {"batch": str(batch)},
            )
            await connection.commit()
        await connection.execute(
            text("INSERT INTO outbox_dispatch (event_id, at) SELECT event_id, now() FROM outbox_events")
        )
        await connection.commit()


async def test_a_later_round_reads_through_the_index_on_a_large_outbox_without_statistics(
    sessions: Sessions, clock: Clock, db_engine: AsyncEngine
) -> None:
    """On PostgreSQL with no statistics gathered (autovacuum off, or not run yet), a round past the mark
    reads the new events through the transaction index and looks each up in the dispatch rows, however many
    events were claimed before and whatever the planner estimates: the plans of the statements it runs read
    neither table whole."""
    if db_engine.dialect.name != "postgresql":
        pytest.skip("the mark is an outbox id on SQLite: a range of the table's own key")
    await claimed_outbox(db_engine)
    dispatcher = Dispatcher(sessions, DeliveryPolicy(), clock=clock)
    statements: list[tuple[str, object]] = []

    def seen(_conn: object, _cursor: object, statement: str, parameters: object, *_: object) -> None:
        if "outbox_events" in statement:
            statements.append((statement, parameters))

    try:
        assert await dispatcher.fan_out() == 0  # the first round looks at every event: all claimed
        await write_events(sessions, clock, 5)
        event.listen(db_engine.sync_engine, "before_cursor_execute", seen)
        try:
            assert await dispatcher.fan_out() == 5
        finally:
            event.remove(db_engine.sync_engine, "before_cursor_execute", seen)
    finally:
        await dispatcher.close()
    assert len(statements) == 2  # the batch read and the claim
    async with db_engine.connect() as connection:
        # as a planner would that judged a join of whole tables cheaper than a lookup per new event
        await connection.exec_driver_sql("SET enable_nestloop = off")
        for statement, parameters in statements:
            plan = (await connection.exec_driver_sql("EXPLAIN " + statement, parameters)).scalars().all()
            # a whole table, or the key's index from its first entry on
            scans = [
                line for line in plan if "Seq Scan on outbox" in line or "using pk_outbox_events" in line
            ]
            assert not scans, "\n".join(plan)


async def test_a_round_that_finds_nothing_new_looks_past_the_highest_id_next_time(
    sessions: Sessions, clock: Clock, db_engine: AsyncEngine
) -> None:
    """A first round that finds every event already claimed (by another dispatcher, or before a restart)
    still moves its mark past them: a worker does not look at the whole outbox every round while no event
    comes. An event written by hand with a lower id shows which rows a round looks at: on PostgreSQL its
    transaction is newer than the mark, so it is found."""
    for row_id in (10, 20, 30):
        await _event_with_id(sessions, clock, row_id, f"e-{row_id}")
    other = Dispatcher(sessions, DeliveryPolicy(), clock=clock)
    fresh = Dispatcher(sessions, DeliveryPolicy(), clock=clock)
    try:
        assert await other.fan_out() == 3
        assert await fresh.fan_out() == 0  # every event claimed by the other: none is this one's
        await _event_with_id(sessions, clock, 15, "e-15")
        clock.advance(seconds=10)
        assert await fresh.fan_out() == (0 if db_engine.dialect.name == "sqlite" else 1)
    finally:
        await other.close()
        await fresh.close()


async def test_a_claim_that_does_not_commit_leaves_the_mark_where_it_was(
    sessions: Sessions, clock: Clock, db_engine: AsyncEngine
) -> None:
    """A round stopped while claiming (its claim waits on a lock, and the worker stops) claims nothing and
    moves no mark: the next round finds the same events."""
    if db_engine.dialect.name != "postgresql":
        pytest.skip("a claim waiting on a table lock is cancelled on PostgreSQL")
    dispatcher = Dispatcher(sessions, DeliveryPolicy(), clock=clock)
    try:
        await dispatcher.fan_out()  # the first round; the mark is set from here on
        ids = await write_events(sessions, clock, 2)
        async with db_engine.connect() as holder:
            await holder.execute(text("LOCK TABLE outbox_dispatch IN EXCLUSIVE MODE"))
            claiming = asyncio.ensure_future(dispatcher.fan_out())
            while not await _waiting_on_a_lock(holder):
                assert not claiming.done()
                await asyncio.sleep(0.01)
            claiming.cancel()
            with pytest.raises(asyncio.CancelledError):
                await claiming
            await holder.rollback()
        assert await dispatcher.fan_out() == 2
    finally:
        await dispatcher.close()
    async with sessions() as session:
        claimed = set((await session.execute(select(OutboxDispatch.event_id))).scalars())
    assert set(ids) <= claimed


async def _waiting_on_a_lock(connection: AsyncConnection) -> bool:
    query = text("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'outbox_dispatch'::regclass")
    return bool((await connection.execute(query)).scalar())


async def test_a_fan_out_round_takes_up_to_its_batch_of_events_and_the_next_round_the_rest(
    sessions: Sessions, clock: Clock
) -> None:
    """Fan-out takes `fan_out_batch` events a round, apart from the deliveries' own batch."""
    await subscribe(sessions, "http://127.0.0.1:9/never-sent", clock)
    ids = await write_events(sessions, clock, 7)
    dispatcher = Dispatcher(sessions, DeliveryPolicy(batch=2, fan_out_batch=5), clock=clock)
    try:
        assert await dispatcher.fan_out() == 5
        assert await dispatcher.fan_out() == 2
        assert await dispatcher.fan_out() == 0
    finally:
        await dispatcher.close()
    assert sorted(d.event_id for d in await deliveries(sessions)) == sorted(ids)


async def test_fan_out_on_a_sqlite_file_is_a_write_of_the_files_writer(
    sessions: Sessions, clock: Clock, db_engine: AsyncEngine
) -> None:
    """On a SQLite file a fan-out round sends nothing through the engine: the claims and the deliveries
    are written in a transaction of the file's writer (the one the app shares with its other writes), and
    the deliveries are due at the round's time as the dispatcher's own statements compare it."""
    if db_engine.dialect.name != "sqlite":
        pytest.skip("the writer is a SQLite file's")
    await subscribe(sessions, "http://127.0.0.1:9/never-sent", clock)
    ids = await write_events(sessions, clock, 3)
    writers = SqliteWriters()
    dispatcher = Dispatcher(sessions, DeliveryPolicy(), clock=clock, sqlite_writers=writers)
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        statements.append(statement)

    event.listen(db_engine.sync_engine, "before_cursor_execute", seen)
    try:
        assert await dispatcher.fan_out() == 3
    finally:
        event.remove(db_engine.sync_engine, "before_cursor_execute", seen)
    writer = writers.for_url(db_engine.url)
    assert (statements, writer.transactions) == ([], 1)
    await writer.close()
    try:
        async with sessions() as session:
            due = select(func.count()).where(
                Delivery.next_attempt_at <= clock(), Delivery.status == "pending"
            )
            assert await session.scalar(due) == 3
        assert await dispatcher.deliver_due() == 3
    finally:
        await dispatcher.close()
    assert sorted(d.event_id for d in await deliveries(sessions)) == sorted(ids)


async def test_events_fanned_out_before_any_subscription_are_not_delivered_to_a_later_one(
    sessions: Sessions, clock: Clock
) -> None:
    await write_events(sessions, clock, 3)
    dispatcher = Dispatcher(sessions, DeliveryPolicy(fan_out_batch=2), clock=clock)
    try:
        assert await dispatcher.fan_out() == 2  # nobody subscribed: the claims alone
        assert await dispatcher.fan_out() == 1
        await subscribe(sessions, "http://127.0.0.1:9/never-sent", clock)
        [later] = await write_events(sessions, clock, 1)
        assert await dispatcher.fan_out() == 1  # the next round finds only the new one
    finally:
        await dispatcher.close()
    assert [d.event_id for d in await deliveries(sessions)] == [later]


async def test_old_events_whose_deliveries_were_all_delivered_are_deleted(
    sessions: Sessions, clock: Clock
) -> None:
    """Past the retention, an event delivered to every subscriber goes with its delivery and dispatch
    rows; one still failing stays, as do young events and the newest of all (so SQLite never gives its id
    again). A dispatcher's round prunes when the retention is set, about every `prune_seconds`."""
    failing: set[str] = set()
    async with receiver(lambda request: 500 if request.event["id"] in failing else 200) as hooks:
        await subscribe(sessions, hooks.url, clock)
        old = await write_events(sessions, clock, 3)
        failing.add(old[0])
        dispatcher = Dispatcher(sessions, DeliveryPolicy(retention=timedelta(days=30)), clock=clock)
        try:
            await dispatcher.run_once()
            clock.advance(days=31)
            [young] = await write_events(sessions, clock, 1)
            await dispatcher.run_once()  # its first prune: the two old delivered events go
            async with sessions() as session:
                left = set((await session.execute(select(OutboxEvent.event_id))).scalars())
                dispatched = set((await session.execute(select(OutboxDispatch.event_id))).scalars())
            assert left == dispatched == {old[0], young}
            assert {d.event_id for d in await deliveries(sessions)} == {old[0], young}
            clock.advance(days=31)
            await dispatcher.run_once()  # the next prune: now the young one is old too
        finally:
            await dispatcher.close()
    async with sessions() as session:
        left = set((await session.execute(select(OutboxEvent.event_id))).scalars())
    assert left == {old[0], young}  # the young one is now old, but it is the newest of all


async def test_no_retention_keeps_every_event(sessions: Sessions, clock: Clock) -> None:
    async with receiver(lambda request: 200) as hooks:
        await subscribe(sessions, hooks.url, clock)
        ids = await write_events(sessions, clock, 3)
        dispatcher = Dispatcher(sessions, DeliveryPolicy(retention=None), clock=clock)
        try:
            await dispatcher.run_once()
            clock.advance(days=400)
            await write_events(sessions, clock, 1)
            await dispatcher.run_once()
            async with sessions() as session:
                assert set(ids) <= set((await session.execute(select(OutboxEvent.event_id))).scalars())
            assert await dispatcher.prune(clock()) == 3  # they were old and delivered: asked, it deletes them
        finally:
            await dispatcher.close()
