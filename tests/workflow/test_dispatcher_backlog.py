"""The dispatcher's fan-out through a backlog on PostgreSQL: more events wait than a round's batch, and
transactions commit out of id order. Each event is claimed once, however late its transaction commits,
and a backlog is looked at about once, not once per batch."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.models import OutboxDispatch, OutboxEvent
from service.workflow.dispatcher import DeliveryPolicy, Dispatcher
from service.workflow.outbox import add_event
from tests.workflow.conftest import Clock
from tests.workflow.test_dispatcher import Sessions, claimed_outbox, deliveries, subscribe, write_events

Statements = list[tuple[str, Any]]


@pytest.fixture(autouse=True)
def _postgresql_only(db_engine: AsyncEngine) -> None:
    if db_engine.dialect.name != "postgresql":
        pytest.skip("on SQLite events commit in id order and the mark moves past a full batch")


def capture(engine: AsyncEngine, statements: Statements) -> Any:
    """Record the statements of the engine that read the outbox (not the claims' inserts)."""

    def seen(_conn: object, _cursor: object, statement: str, parameters: object, *_: object) -> None:
        if "outbox_events" in statement and "INSERT INTO outbox_dispatch" not in statement:
            statements.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    return lambda: event.remove(engine.sync_engine, "before_cursor_execute", seen)


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", ()) for n in _nodes(child))]


async def analysed(engine: AsyncEngine, statement: str, parameters: Any) -> list[dict[str, Any]]:
    """The nodes of the statement's plan, as run now (EXPLAIN ANALYZE)."""
    async with engine.connect() as connection:
        explain = "EXPLAIN (ANALYZE, FORMAT JSON) " + statement
        [[plan]] = (await connection.exec_driver_sql(explain, parameters)).all()
        await connection.rollback()
    return _nodes(plan[0]["Plan"])


async def lookups(engine: AsyncEngine, statements: Statements) -> int:
    """How often the statements (their plans run again, EXPLAIN ANALYZE) look an event up among the
    claimed."""
    found = 0
    for statement, parameters in statements:
        nodes = await analysed(engine, statement, parameters)
        found += sum(n["Actual Loops"] for n in nodes if n.get("Relation Name") == "outbox_dispatch")
    return found


async def lookups_through_a_backlog(sessions: Sessions, clock: Clock, db_engine: AsyncEngine) -> int:
    """How often the rounds through 250 events (25 transactions), 50 a round, look an event up among the
    claimed."""
    dispatcher = Dispatcher(sessions, DeliveryPolicy(fan_out_batch=50), clock=clock)
    statements: Statements = []
    try:
        assert await dispatcher.fan_out() == 0  # the first round: the mark is set from here on
        for _ in range(25):
            await write_events(sessions, clock, 10)
        stop = capture(db_engine, statements)
        try:
            claimed = [await dispatcher.fan_out() for _ in range(6)]
        finally:
            stop()
    finally:
        await dispatcher.close()
    assert claimed == [50, 50, 50, 50, 50, 0]
    assert len(statements) == 6
    return await lookups(db_engine, statements)


async def test_a_backlog_is_looked_up_among_the_claimed_about_once_not_once_per_batch(
    sessions: Sessions, clock: Clock, db_engine: AsyncEngine
) -> None:
    """Each round after a full batch looks up only the events of transactions the last one could not see;
    the next 50 after its highest id go straight to the claim. A round that looked up every event past the
    mark looked up all 250 five times over."""
    assert await lookups_through_a_backlog(sessions, clock, db_engine) <= 250


async def test_a_transaction_left_open_elsewhere_does_not_make_rounds_look_at_the_backlog_again(
    sessions: Sessions, clock: Clock, db_engine: AsyncEngine
) -> None:
    """A transaction that began before the backlog and stays open (another worker's, a report's) was
    running when every round read, and only its own events are looked at again: with the oldest running
    transaction as the mark, every round looked at every event after it."""
    async with db_engine.connect() as other:
        await other.execute(text("SELECT pg_current_xact_id()"))  # a transaction with an id of its own
        assert await lookups_through_a_backlog(sessions, clock, db_engine) <= 250
        await other.rollback()


async def test_an_event_committed_late_below_a_full_batch_is_claimed_once(
    sessions: Sessions, clock: Clock
) -> None:
    """An event takes its id, then four later ones commit before it; a round claims a full batch of two
    above its id and the next rounds look past that batch's highest id. The late one is found all the
    same (its transaction was still running when that round read), and every event is claimed once."""
    await subscribe(sessions, "http://127.0.0.1:9/never-sent", clock)
    dispatcher = Dispatcher(sessions, DeliveryPolicy(fan_out_batch=2), clock=clock)
    try:
        assert await dispatcher.fan_out() == 0  # the first round: the mark is set from here on
        async with sessions() as slow, slow.begin():  # takes its event's id first, commits last
            late = add_event(slow, "case.approved", "transfer:t-late", {}, clock())
            await slow.flush()
            newer = [name for _ in range(4) for name in await write_events(sessions, clock, 1)]
            assert await dispatcher.fan_out() == 2  # a full batch, above the late one's id
        claimed = [await dispatcher.fan_out() for _ in range(3)]
    finally:
        await dispatcher.close()
    assert claimed == [2, 1, 0]
    async with sessions() as session:
        ids = {
            name: row_id
            for name, row_id in await session.execute(select(OutboxEvent.event_id, OutboxEvent.id))
        }
        dispatched = (await session.execute(select(OutboxDispatch.event_id))).scalars().all()
    assert ids[late] < min(ids[name] for name in newer)
    assert Counter(dispatched) == dict.fromkeys([late, *newer], 1)
    assert Counter(d.event_id for d in await deliveries(sessions)) == dict.fromkeys([late, *newer], 1)


async def test_past_a_full_batch_a_round_reads_only_new_events_on_a_large_outbox_without_statistics(
    sessions: Sessions, clock: Clock, db_engine: AsyncEngine
) -> None:
    """With 20,000 events claimed before and no statistics gathered, a round after a full batch reads
    the events after the batch and those of transactions it could not see, through the indexes, whatever
    the planner estimates: neither table whole, nor the key's index from its first entry."""
    await claimed_outbox(db_engine)
    dispatcher = Dispatcher(sessions, DeliveryPolicy(fan_out_batch=2), clock=clock)
    statements: Statements = []
    try:
        assert await dispatcher.fan_out() == 0  # the first round looks at every event: all claimed
        for _ in range(5):
            await write_events(sessions, clock, 1)
        assert await dispatcher.fan_out() == 2  # a full batch
        stop = capture(db_engine, statements)
        try:
            assert await dispatcher.fan_out() == 2
        finally:
            stop()
    finally:
        await dispatcher.close()
    [(statement, parameters)] = statements
    async with db_engine.connect() as connection:
        # as a planner would that judged a join of whole tables cheaper than a lookup per new event
        await connection.exec_driver_sql("SET enable_nestloop = off")
        plan = (await connection.exec_driver_sql("EXPLAIN " + statement, parameters)).scalars().all()
    assert not [line for line in plan if "Seq Scan on outbox" in line], "\n".join(plan)
    nodes = await analysed(db_engine, statement, parameters)
    read = sum(
        n["Actual Loops"] * (n["Actual Rows"] + n.get("Rows Removed by Filter", 0))
        for n in nodes
        if n.get("Relation Name") == "outbox_events"
    )
    assert read <= 10, nodes  # the five new events, each once or twice, and the highest id
