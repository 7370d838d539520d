"""The stock journal's group commit on a real database: every entry once and in order, a failed batch
acknowledges none of its callers, and on PostgreSQL a lost connection answers unavailable and is replaced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.engine import HeldDriverConnection, connection_lost
from service.stock.journal import EXCEPTIONS, JOURNAL, LINGER_TURNS, Entry, Journal
from service.stock.ledger import Delta
from service.stock.store import StockException, StockUnavailable


@pytest.fixture
async def journal(db_engine: AsyncEngine) -> AsyncIterator[Journal]:
    journal = Journal(db_engine)
    yield journal
    await journal.close()


def entry(seq: int, kind: str = "reserve") -> Entry:
    return Entry(kind, f"r{seq}", 1000 + seq, (Delta("SKU1", "S1", -1, 1),), {"seq": seq})


async def written(engine: AsyncEngine) -> list[tuple[str, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(JOURNAL.c.ref, JOURNAL.c.record).order_by(JOURNAL.c.id))
        return [(ref, int(record["seq"]) if record else -1) for ref, record in rows]


async def test_concurrent_appends_are_each_written_once_in_order(journal: Journal) -> None:
    first = asyncio.gather(*(journal.append([entry(seq)]) for seq in range(150)))
    await asyncio.sleep(0)  # the first wave is being written while the second one arrives
    second = asyncio.gather(*(journal.append([entry(seq)]) for seq in range(150, 300)))
    assert await first == [[None]] * 150
    assert await second == [[None]] * 150
    assert await written(journal.engine) == [(f"r{seq}", seq) for seq in range(300)]


async def test_appends_within_the_linger_turns_share_one_batch(journal: Journal) -> None:
    if journal.sqlite_writer is not None:
        pytest.skip("a SQLite file's journal goes through its writer (tests/unit/test_sqlite_writer.py)")
    assert LINGER_TURNS >= 3
    calls = []
    for seq in range(3):  # one append a turn: the first batch waits for the others
        calls.append(asyncio.create_task(journal.append([entry(seq)])))
        await asyncio.sleep(0)
    await asyncio.gather(*calls)
    async with journal.engine.connect() as conn:
        xmins = (await conn.execute(text("SELECT DISTINCT xmin::text FROM stock_journal"))).all()
    assert len(xmins) == 1  # one transaction
    assert await written(journal.engine) == [(f"r{seq}", seq) for seq in range(3)]


async def test_an_anomaly_gets_its_row_id(journal: Journal) -> None:
    anomaly = StockException("negative", "SKU1", "S1", "pos-1", 3, 1, datetime(2026, 1, 2, tzinfo=UTC))
    ids = await asyncio.gather(
        journal.append([entry(0)]),
        journal.append([Entry("event", "pos-1", 5, (Delta("SKU1", "S1", -3),), None, anomaly), entry(1)]),
    )
    async with journal.engine.connect() as conn:
        found = (await conn.execute(select(EXCEPTIONS.c.id, EXCEPTIONS.c.event_id))).all()
    assert ids == [[None], [found[0].id, None]] and found[0].event_id == "pos-1"
    assert [ref for ref, _ in await written(journal.engine)] == ["r0", "pos-1", "r1"]


async def test_a_failed_batch_acknowledges_none_of_its_callers(journal: Journal) -> None:
    async with journal.engine.begin() as conn:
        await conn.exec_driver_sql("ALTER TABLE stock_journal RENAME TO stock_journal_off")
    outcomes = await asyncio.gather(
        *(journal.append([entry(seq)]) for seq in range(20)), return_exceptions=True
    )
    assert all(isinstance(outcome, StockUnavailable) for outcome in outcomes)
    async with journal.engine.begin() as conn:
        await conn.exec_driver_sql("ALTER TABLE stock_journal_off RENAME TO stock_journal")
    assert await written(journal.engine) == []
    await journal.append([entry(20)])
    assert await written(journal.engine) == [("r20", 20)]


async def test_one_bad_entry_fails_its_whole_batch(journal: Journal) -> None:
    if journal.engine.dialect.name != "postgresql":
        pytest.skip("SQLite does not enforce the kind column's length")
    # appends made in one turn of the loop are written as one batch
    outcomes = await asyncio.gather(
        *(journal.append([entry(seq, "x" * 40 if seq == 5 else "reserve")]) for seq in range(10)),
        return_exceptions=True,
    )
    assert all(isinstance(outcome, StockUnavailable) for outcome in outcomes)
    assert await written(journal.engine) == []


async def test_a_terminated_connection_answers_unavailable_then_recovers(journal: Journal) -> None:
    if journal.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL connections only")
    await journal.append([entry(0)])
    driver = journal._driver
    assert isinstance(driver, HeldDriverConnection)
    pid = (await driver.get()).get_server_pid()
    async with journal.engine.connect() as conn:
        await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with pytest.raises(StockUnavailable):
        await journal.append([entry(1)])
    await journal.append([entry(2)])
    assert (await driver.get()).get_server_pid() != pid
    assert await written(journal.engine) == [("r0", 0), ("r2", 2)]


def test_data_errors_keep_the_connection_and_protocol_errors_drop_it() -> None:
    import asyncpg

    assert not connection_lost(asyncpg.exceptions.StringDataRightTruncationError("too long"))
    assert not connection_lost(asyncpg.exceptions.UndefinedTableError("no table"))
    assert connection_lost(asyncpg.exceptions.InternalClientError("another operation is in progress"))
    assert connection_lost(asyncpg.exceptions.AdminShutdownError("terminating connection"))
    assert connection_lost(ConnectionResetError())


async def test_closing_writes_what_is_queued_and_refuses_what_comes_after(db_engine: AsyncEngine) -> None:
    journal = Journal(db_engine)
    calls = [asyncio.create_task(journal.append([entry(seq)])) for seq in range(5)]
    await asyncio.sleep(0)  # queued, not yet written (the batch waits a few turns for company)
    await journal.close()
    # each caller has its answer: none is left waiting on a writer that was stopped
    _done, waiting = await asyncio.wait(calls, timeout=30)
    assert not waiting
    assert [call.result() for call in calls] == [[None]] * 5
    assert await written(db_engine) == [(f"r{seq}", seq) for seq in range(5)]
    with pytest.raises(StockUnavailable):
        await journal.append([entry(5)])
    assert len(await written(db_engine)) == 5
