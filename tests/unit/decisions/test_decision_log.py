"""The decision log writer: bounded queue that slows callers instead of dropping, batches, flush on close,
each trace written once a day and read back with every decision that names it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.db.engine import create_engine, session_factory
from service.db.migrate import upgrade
from service.db.models.decisions import DecisionEntry, DecisionTrace
from service.db.sqlite_writer import SqliteWriters
from service.decisions.ids import new_decision_id
from service.decisions.log import SQLITE_SLICE, SqlDecisionLog
from service.decisions.record import DecisionRecord
from service.settings import DatabaseSettings


@pytest.fixture
async def sessions(db_engine: AsyncEngine) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    yield session_factory(db_engine)


def record(
    kind: str = "transfer",
    key: str | None = None,
    trace: dict[str, Any] | None = None,
    created_at: datetime | None = None,
) -> DecisionRecord:
    return DecisionRecord(
        id=new_decision_id(),
        kind=kind,
        created_at=created_at or datetime.now(UTC),
        request={"transfer_id": "t"},
        decision={"outcome": "approve"},
        ruleset={"name": "store-transfer-approval", "version": 1, "sha256": "0" * 64},
        trace=trace,
        timings={"total_ms": 1.0},
        idempotency_key=key,
    )


def a_trace(n: int) -> dict[str, Any]:
    """A trace (a new object each call, the same content for the same `n`)."""
    return {"rules": {"matched": [f"rule-{n}"], "facts": {"price": 12.5, "tags": ["a", "é"]}}, "n": None}


async def rows(sessions: async_sessionmaker[AsyncSession], table: Any = DecisionEntry) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(table))).scalar_one())


async def test_a_full_queue_makes_the_caller_wait_and_drops_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    log = SqlDecisionLog(sessions, max_queue=2)
    await log.record(record())
    await log.record(record())
    third = asyncio.create_task(log.record(record()))
    await asyncio.sleep(0.05)
    assert not third.done()  # waiting for room, not dropped
    log.start()
    await asyncio.wait_for(third, 5)
    await log.flush()
    assert await rows(sessions) == 3
    await log.close()


async def test_closing_flushes_every_queued_decision(sessions: async_sessionmaker[AsyncSession]) -> None:
    log = SqlDecisionLog(sessions, batch_size=3)
    log.start()
    for _ in range(10):
        await log.record(record())
    await log.close()
    assert await rows(sessions) == 10


async def test_a_queued_decision_is_readable_before_it_is_written(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    log = SqlDecisionLog(sessions)
    queued = msgspec.structs.replace(
        record(key="idem-q", trace=a_trace(1)),
        actor="alice",
        shadow={"differs": True},
        inputs={"stock": {"SKU-1": {"DC-1": 4}}},
    )
    await log.record(queued)
    # the log keeps the decision encoded; read back, it is the decision as answered and logged
    assert await log.get(queued.id) == queued.logged()
    assert await log.find_by_idempotency_key("transfer", "idem-q") == queued.logged()
    assert await rows(sessions) == 0
    await log.flush()
    await log.close()


async def test_a_written_decision_is_read_back_from_the_database(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    log = SqlDecisionLog(sessions)
    log.start()
    written = record(kind="allocation", key="idem-1")
    await log.record(written)
    await log.close()
    fresh = SqlDecisionLog(sessions)
    found = await fresh.get(written.id)
    assert found is not None
    assert found["ruleset"] == {"name": "store-transfer-approval", "version": 1, "sha256": "0" * 64}
    assert datetime.fromisoformat(found["created_at"]) == written.created_at
    assert (found["request"], found["decision"], found["trace"]) == (written.request, written.decision, None)
    by_key = await fresh.find_by_idempotency_key("allocation", "idem-1")
    assert by_key is not None and by_key["decision_id"] == written.id


async def test_a_failed_write_keeps_its_batch_and_succeeds_on_a_new_connection(
    sessions: async_sessionmaker[AsyncSession], db_engine: AsyncEngine
) -> None:
    async def rename(old: str, new: str) -> None:
        async with db_engine.begin() as conn:
            await conn.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}")

    log = SqlDecisionLog(sessions)
    log.start()
    await log.record(record())
    await log.flush()  # the writer now holds its connection
    await rename("decisions", "decisions_away")
    queued = [record(trace=a_trace(n % 2)) for n in range(5)]
    for one in queued:
        await log.record(one)
    await asyncio.sleep(0.3)  # the writer fails at least once meanwhile
    assert log.written == 1  # nothing of the batch was written while the table was away
    await rename("decisions_away", "decisions")
    await asyncio.wait_for(log.flush(), 10)
    await log.close()
    assert await rows(sessions) == 6
    for one in queued:  # the traces of the failed attempts were written by the one that succeeded
        assert await SqlDecisionLog(sessions).get(one.id) == one.logged()


async def test_a_terminated_postgresql_connection_is_replaced_and_the_batch_written(
    sessions: async_sessionmaker[AsyncSession], db_engine: AsyncEngine
) -> None:
    if db_engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL connections only")
    log = SqlDecisionLog(sessions)
    log.start()
    await log.record(record())
    await log.flush()  # the writer now holds its own driver connection
    driver = log._driver
    assert driver is not None
    pid = (await driver.get()).get_server_pid()
    async with db_engine.connect() as conn:
        await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await log.record(record())
    await asyncio.wait_for(log.flush(), 10)
    assert (await driver.get()).get_server_pid() != pid
    await log.close()
    assert await rows(sessions) == 2


async def test_on_a_sqlite_file_a_batch_is_written_a_slice_per_transaction(migrated_sqlite_url: str) -> None:
    engine = create_engine(DatabaseSettings(url=migrated_sqlite_url))
    sessions = session_factory(engine)
    writers = SqliteWriters()
    writer = writers.for_url(migrated_sqlite_url)
    assert writer is not None
    log = SqlDecisionLog(sessions, sqlite_writers=writers)
    count = 2 * SQLITE_SLICE + 3
    for _ in range(count):
        await log.record(record())
    before = writer.transactions
    log.start()  # the whole queue is one batch
    await log.flush()
    # each slice of the batch is a transaction of its own: a turn of the loop holds at most one slice
    assert writer.transactions - before == 3
    assert await rows(sessions) == count
    await log.close()
    await engine.dispose()


async def test_each_trace_is_written_once_a_day_and_read_back_with_every_decision_naming_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    yesterday = datetime.now(UTC) - timedelta(days=1)
    first = [record(trace=a_trace(1)), record(trace=a_trace(1)), record(trace=a_trace(2)), record()]
    later = [record(trace=a_trace(1)), record(trace=a_trace(1), created_at=yesterday)]
    log = SqlDecisionLog(sessions)
    log.start()
    for one in first:
        await log.record(one)
    await log.flush()
    for one in later:  # the same trace again, in a later batch, and on another day
        await log.record(one)
    await log.close()
    # a second log (another worker) writing a trace the first wrote already
    again = record(trace=a_trace(2))
    other = SqlDecisionLog(sessions)
    other.start()
    await other.record(again)
    await other.close()
    assert await rows(sessions) == 7
    assert await rows(sessions, DecisionTrace) == 3  # traces 1 and 2 today, trace 1 yesterday
    async with sessions() as session:
        inline = select(func.count()).select_from(DecisionEntry).where(DecisionEntry.trace.is_not(None))
        assert (await session.execute(inline)).scalar_one() == 0
    reader = SqlDecisionLog(sessions)
    for one in [*first, *later, again]:
        assert await reader.get(one.id) == one.logged()


async def test_a_decision_logged_with_its_trace_inline_is_read_as_before(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    old = record(trace=a_trace(3))
    row = old.row(None)  # the JSON columns as the writer's encoder gets them, decoded for the ORM here
    values = {
        column: msgspec.json.decode(value) if isinstance(value, msgspec.Raw) else value
        for column, value in zip(DecisionRecord.COLUMNS, row, strict=True)
    }
    async with sessions() as session, session.begin():
        session.add(DecisionEntry(**values, trace=old.trace))
    assert await SqlDecisionLog(sessions).get(old.id) == old.logged()


async def test_traces_are_kept_apart_also_through_the_engine_on_a_sqlite_uri(tmp_path: Path) -> None:
    # a URI filename is written through the engine's connection, not the file's SQLite writer
    engine = create_engine(
        DatabaseSettings(url=f"sqlite+aiosqlite:///file:{tmp_path / 'log.db'}?mode=rwc&uri=true")
    )
    try:
        await upgrade(engine)
        sessions = session_factory(engine)
        log = SqlDecisionLog(sessions)
        assert log._sqlite is None
        logged = [record(trace=a_trace(1)), record(trace=a_trace(1)), record(trace=a_trace(2))]
        log.start()
        for one in logged[:2]:
            await log.record(one)
        await log.flush()
        await log.record(logged[2])
        await log.close()
        assert await rows(sessions, DecisionTrace) == 2
        for one in logged:
            assert await SqlDecisionLog(sessions).get(one.id) == one.logged()
    finally:
        await engine.dispose()


async def test_a_lookup_by_key_reads_the_keys_index_on_a_large_log_without_statistics(
    sessions: async_sessionmaker[AsyncSession], db_engine: AsyncEngine
) -> None:
    """With no statistics gathered (a fresh day's partition, autovacuum off; SQLite never analyzed), a
    lookup by idempotency key reads the decisions with that key through the index of keys, found or not,
    and answers the earliest; the plan of what it runs does not walk the decisions of the kind in time
    order (both planners did, for the first with the key: all of them when none has it)."""
    async with db_engine.begin() as connection:
        await connection.execute(
            text(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)"
                " INSERT INTO decisions (id, kind, created_at, ruleset_name, ruleset_version, ruleset_sha256,"
                " request, decision, timings) SELECT 'd-' || i, 'allocation', :at, 'r', 1, 'x', '{}', '{}',"
                " '{}' FROM n"
            ),
            {"at": datetime.now(UTC)},
        )
    log = SqlDecisionLog(sessions)
    log.start()
    now = datetime.now(UTC)
    later, earlier = (
        record("allocation", "idem-twice", created_at=now - timedelta(seconds=s)) for s in (1, 2)
    )
    await log.record(later)
    await log.record(earlier)
    await log.close()
    fresh = SqlDecisionLog(sessions)
    statements: list[tuple[str, object]] = []

    def seen(_conn: object, _cursor: object, statement: str, parameters: object, *_: object) -> None:
        if "FROM decisions" in statement:
            statements.append((statement, parameters))

    event.listen(db_engine.sync_engine, "before_cursor_execute", seen)
    try:
        found = await fresh.find_by_idempotency_key("allocation", "idem-twice")
        assert await fresh.find_by_idempotency_key("allocation", "idem-never") is None
    finally:
        event.remove(db_engine.sync_engine, "before_cursor_execute", seen)
    assert found is not None and found["decision_id"] == earlier.id
    assert len(statements) == 2
    explain = "EXPLAIN QUERY PLAN " if db_engine.dialect.name == "sqlite" else "EXPLAIN "
    async with db_engine.connect() as connection:
        for statement, parameters in statements:
            rows = (await connection.exec_driver_sql(explain + statement, parameters)).all()
            plan = [str(row[-1]) for row in rows]
            walks = [line for line in plan if "Seq Scan" in line or "kind_created_at" in line]
            assert not walks, "\n".join(plan)
