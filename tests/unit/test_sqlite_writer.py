"""The SQLite writer thread (group commits for callers that wait) and SQLite's multi-row batch inserts."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select

from service.db.engine import BatchInsert, create_engine
from service.db.sqlite_writer import SqliteWriter, in_transaction, sqlite_file
from service.settings import DatabaseSettings


def make_table(path: Path) -> str:
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v INTEGER NOT NULL CHECK (v >= 0))"
    )
    connection.commit()
    connection.close()
    return str(path)


def values(path: str) -> list[int]:
    connection = sqlite3.connect(path)
    try:
        return [v for (v,) in connection.execute("SELECT v FROM t ORDER BY id")]
    finally:
        connection.close()


class Recorder:
    """A write_batch that inserts each item (a list of values) and answers each item's row ids; it
    remembers the batch sizes it saw and which thread ran it."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.threads: set[str] = set()
        self.gate = gate

    def __call__(self, connection: sqlite3.Connection, batch: Sequence[list[int]]) -> list[list[int]]:
        if self.gate is not None:
            self.gate.wait(5)
        self.sizes.append(len(batch))
        self.threads.add(threading.current_thread().name)

        def write() -> list[list[int]]:
            out = []
            for item in batch:
                ids = []
                for v in item:
                    row_id = connection.execute("INSERT INTO t (v) VALUES (?)", (v,)).lastrowid
                    assert row_id is not None
                    ids.append(row_id)
                out.append(ids)
            return out

        return in_transaction(connection, write)


def test_sqlite_file_names_only_files() -> None:
    assert sqlite_file("sqlite+aiosqlite:////tmp/x/app.db") == "/tmp/x/app.db"
    assert sqlite_file("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_file("sqlite+aiosqlite://") is None
    assert sqlite_file("postgresql+asyncpg://127.0.0.1/test") is None
    assert sqlite_file("sqlite+aiosqlite:///file:app.db?mode=ro&uri=true") is None


async def test_callers_waiting_together_share_one_commit(tmp_path: Path) -> None:
    path = make_table(tmp_path / "w.db")
    gate = threading.Event()
    recorder = Recorder(gate)
    writer: SqliteWriter[list[int], list[int]] = SqliteWriter(path, recorder)
    first = asyncio.create_task(writer.submit([1]))
    await asyncio.sleep(0.05)  # the thread holds the first item at the gate
    rest = [asyncio.create_task(writer.submit([v])) for v in range(2, 12)]
    await asyncio.sleep(0.05)
    gate.set()
    answers = await asyncio.gather(first, *rest)
    await writer.close()
    assert recorder.sizes == [1, 10]  # the ten handed over meanwhile went in one batch
    assert recorder.threads == {"sqlite-writer"}
    assert values(path) == list(range(1, 12))
    assert [ids[0] for ids in answers] == list(range(1, 12))  # each caller gets its own row's id


async def test_a_failed_batch_fails_its_callers_writes_nothing_and_the_next_one_works(tmp_path: Path) -> None:
    path = make_table(tmp_path / "w.db")
    writer: SqliteWriter[list[int], list[int]] = SqliteWriter(path, Recorder())
    with pytest.raises(sqlite3.IntegrityError):
        await writer.submit([5, -1])  # the second row breaks the CHECK: the whole item is rolled back
    assert values(path) == []
    assert await writer.submit([7]) == [1]
    await writer.close()
    assert values(path) == [7]


async def test_close_writes_what_was_handed_over_and_a_later_submit_starts_again(tmp_path: Path) -> None:
    path = make_table(tmp_path / "w.db")
    writer: SqliteWriter[list[int], list[int]] = SqliteWriter(path, Recorder())
    pending = [asyncio.create_task(writer.submit([v])) for v in range(20)]
    await asyncio.sleep(0)  # handed over
    await writer.close()
    await asyncio.gather(*pending)
    assert values(path) == list(range(20))
    await writer.submit([99])
    await writer.close()
    assert values(path)[-1] == 99


async def test_a_write_batch_answering_the_wrong_count_fails_every_caller(tmp_path: Path) -> None:
    path = make_table(tmp_path / "w.db")

    def wrong(connection: sqlite3.Connection, batch: Sequence[int]) -> list[int]:
        return []

    writer: SqliteWriter[int, int] = SqliteWriter(path, wrong)
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        await writer.submit(1)
    await writer.close()


async def test_batch_insert_on_sqlite_splits_rows_into_statements_within_the_variable_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.db.engine as engine_module

    metadata = MetaData()
    table = Table("r", metadata, Column("a", Integer), Column("b", String(10)))
    engine = create_engine(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"))
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    insert = BatchInsert(table, ("b", "a"))
    # 7 variables per statement: 3 rows of 2 columns
    monkeypatch.setattr(engine_module, "_SQLITE_MAX_VARIABLES", 7)
    rows = [(f"x{i}", i) for i in range(10)]
    statements = insert.sqlite_statements(engine.dialect, rows)
    assert [len(parameters) for _, parameters in statements] == [6, 6, 6, 2]
    async with engine.begin() as connection:
        await insert.execute(connection, rows)
        stored = (await connection.execute(select(table.c.a, table.c.b).order_by(table.c.a))).all()
        count = (await connection.execute(select(func.count()).select_from(table))).scalar_one()
    await engine.dispose()
    assert count == 10
    assert [tuple(row) for row in stored] == [(i, f"x{i}") for i in range(10)]
