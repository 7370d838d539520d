"""The SQLite writer (batched writes on the event loop, one transaction for what a few turns hand over) and
SQLite's multi-row batch inserts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table, func, select

from service.db.engine import BatchInsert, create_engine, sqlite_pragmas
from service.db.sqlite_writer import (
    LINGER_TURNS,
    SqliteWriter,
    SqliteWriters,
    checkpoint_file,
    sqlite_file,
)
from service.settings import DatabaseSettings


def make_table(path: Path) -> str:
    connection = sqlite3.connect(path)
    sqlite_pragmas(connection)
    for table in ("t", "u"):
        connection.execute(
            f"CREATE TABLE {table} (id INTEGER PRIMARY KEY AUTOINCREMENT, v INTEGER NOT NULL CHECK (v >= 0),"
            " pad TEXT)"
        )
    connection.commit()
    connection.close()
    return str(path)


def values(path: str, table: str = "t") -> list[int]:
    connection = sqlite3.connect(path)
    try:
        return [v for (v,) in connection.execute(f"SELECT v FROM {table} ORDER BY id")]
    finally:
        connection.close()


class Recorder:
    """A write function that inserts each item (a list of values) into its table and answers each item's
    row ids; it remembers the batch sizes it saw and which threads ran it."""

    def __init__(self, table: str = "t") -> None:
        self.table = table
        self.sizes: list[int] = []
        self.threads: set[threading.Thread] = set()
        self.__name__ = f"insert_{table}"

    def __call__(self, connection: sqlite3.Connection, batch: Sequence[list[int]]) -> list[list[int]]:
        self.sizes.append(len(batch))
        self.threads.add(threading.current_thread())
        out = []
        for item in batch:
            ids = []
            for v in item:
                row_id = connection.execute(f"INSERT INTO {self.table} (v) VALUES (?)", (v,)).lastrowid
                assert row_id is not None
                ids.append(row_id)
            out.append(ids)
        return out


def test_sqlite_file_names_only_files() -> None:
    assert sqlite_file("sqlite+aiosqlite:////tmp/x/app.db") == "/tmp/x/app.db"
    assert sqlite_file("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_file("sqlite+aiosqlite://") is None
    assert sqlite_file("postgresql+asyncpg://127.0.0.1/test") is None
    assert sqlite_file("sqlite+aiosqlite:///file:app.db?mode=ro&uri=true") is None


def test_one_writer_per_file(tmp_path: Path) -> None:
    path = make_table(tmp_path / "w.db")
    writers = SqliteWriters()
    assert writers.for_file(path) is writers.for_file(str(tmp_path / "." / "w.db"))
    assert writers.for_url(f"sqlite+aiosqlite:///{path}") is writers.for_file(path)
    assert writers.for_file(path) is not writers.for_file(make_table(tmp_path / "other.db"))
    assert writers.for_url("postgresql+asyncpg://127.0.0.1/test") is None
    assert SqliteWriters().for_file(path) is not writers.for_file(path)


async def test_what_one_turn_hands_over_is_one_transaction_on_the_loop_thread(tmp_path: Path) -> None:
    path = make_table(tmp_path / "w.db")
    writer = SqliteWriter(path)
    first, second = Recorder("t"), Recorder("u")
    calls = [writer.submit(first, [v]) for v in range(1, 11)] + [writer.submit(second, [7, 8])]
    answers = await asyncio.gather(*calls)
    assert writer.transactions == 1
    assert first.sizes == [10]
    assert second.sizes == [1]
    assert first.threads == second.threads == {threading.current_thread()}
    assert values(path, "t") == list(range(1, 11))
    assert values(path, "u") == [7, 8]
    assert [ids[0] for ids in answers[:10]] == list(range(1, 11))  # each caller gets its own row's id
    assert answers[10] == [1, 2]
    assert await writer.submit(first, [11]) == [11]  # a later turn: a transaction of its own
    assert writer.transactions == 2
    await writer.close()


async def test_a_read_runs_on_the_loops_connection_between_transactions(tmp_path: Path) -> None:
    path = make_table(tmp_path / "w.db")
    writer = SqliteWriter(path)
    used: list[sqlite3.Connection] = []

    def insert_and_note(connection: sqlite3.Connection, batch: Sequence[int]) -> list[None]:
        used.append(connection)
        connection.executemany("INSERT INTO t (v) VALUES (?)", [(v,) for v in batch])
        return [None for _ in batch]

    await writer.submit(insert_and_note, 5)
    seen = writer.read(lambda connection: (connection, connection.in_transaction, values_of(connection)))
    assert seen == (used[0], False, [5])  # the writer's connection, outside any transaction, its commit seen
    with pytest.raises(sqlite3.OperationalError):
        writer.read(lambda connection: connection.execute("SELECT nothing FROM t"))
    await writer.submit(insert_and_note, 6)  # after an error, a connection of its own again
    assert used[1] is not used[0]
    assert writer.read(values_of) == [5, 6]
    await writer.close()


def values_of(connection: sqlite3.Connection) -> list[int]:
    return [v for (v,) in connection.execute("SELECT v FROM t ORDER BY id")]


async def test_what_is_handed_over_within_the_linger_turns_shares_one_transaction(tmp_path: Path) -> None:
    path = make_table(tmp_path / "w.db")
    writer = SqliteWriter(path)
    recorder = Recorder()
    calls = []
    assert LINGER_TURNS >= 3
    for v in range(3):  # one item a turn: the first waits LINGER_TURNS turns for the others
        calls.append(asyncio.create_task(writer.submit(recorder, [v])))
        await asyncio.sleep(0)
    await asyncio.gather(*calls)
    assert recorder.sizes == [3]
    assert writer.transactions == 1
    assert values(path) == [0, 1, 2]
    await writer.close()


def _temporary_files() -> list[str]:
    """The files this process holds open that SQLite made as temporary files (unlinked, named etilqs_*)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if "etilqs_" in target:
                found.append(target)
    return found


async def test_the_pages_a_write_changes_in_its_savepoint_are_journaled_in_memory(tmp_path: Path) -> None:
    """Every write runs in a savepoint, whose statement journal keeps a copy of each page it changes; past
    64 KiB SQLite spills it to a temporary file (a write() per page) unless told to keep it in memory."""
    path = make_table(tmp_path / "w.db")
    seed = sqlite3.connect(path)
    seed.executemany("INSERT INTO t (v) VALUES (?)", [(v,) for v in range(20_000)])
    seed.commit()
    seed.close()

    def rewrite(connection: sqlite3.Connection, batch: Sequence[int]) -> list[list[str]]:
        connection.execute("UPDATE t SET v = v + ?", (batch[0],))  # every page of the table
        return [_temporary_files() for _ in batch]

    writer = SqliteWriter(path)
    try:
        assert await writer.submit(rewrite, 1) == []
    finally:
        await writer.close()
    assert values(path)[:2] == [1, 2]


async def test_a_failing_kind_of_write_fails_alone_and_the_next_batch_works(tmp_path: Path) -> None:
    path = make_table(tmp_path / "w.db")
    writer = SqliteWriter(path)
    good, bad = Recorder("t"), Recorder("u")
    results = await asyncio.gather(
        writer.submit(good, [1]),
        writer.submit(bad, [5, -1]),
        writer.submit(good, [2]),
        return_exceptions=True,
    )
    assert results[0] == [1]
    assert isinstance(results[1], sqlite3.IntegrityError)  # the second row breaks the CHECK
    assert results[2] == [2]
    assert writer.transactions == 1
    assert values(path, "t") == [1, 2]
    assert values(path, "u") == []  # the failed kind's first row was rolled back with it
    assert await writer.submit(bad, [7]) == [1]  # the id of the rolled-back row is given again
    assert values(path, "u") == [7]
    await writer.close()


async def test_a_write_answering_the_wrong_count_fails_its_callers(tmp_path: Path) -> None:
    path = make_table(tmp_path / "w.db")

    def wrong(connection: sqlite3.Connection, batch: Sequence[int]) -> list[int]:
        return []

    writer = SqliteWriter(path)
    with pytest.raises(RuntimeError, match="wrong gave 0 results for 1 items"):
        await writer.submit(wrong, 1)
    await writer.close()


class Ticker:
    """A task that counts turns of the event loop: it keeps counting only while nothing blocks the loop."""

    def __init__(self) -> None:
        self.ticks = 0
        self._wanted = 0
        self._reached = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.ticks += 1
            if self.ticks >= self._wanted:
                self._reached.set()
            await asyncio.sleep(0.005)

    async def more(self, count: int) -> None:
        """Returns once the loop has turned `count` more times (fails after 5 s if it is blocked)."""
        self._wanted = self.ticks + count
        self._reached.clear()
        await asyncio.wait_for(self._reached.wait(), 5)

    def stop(self) -> None:
        self._task.cancel()


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_taken_write_lock_is_waited_for_without_blocking_the_loop(tmp_path: Path) -> None:
    path = make_table(tmp_path / "w.db")
    writer = SqliteWriter(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another connection (another process, say) holds the write lock
    ticker = Ticker()
    recorder = Recorder()
    waiting = asyncio.create_task(writer.submit(recorder, [3]))
    await ticker.more(20)  # the loop goes on meanwhile, across several retries of the write
    assert not waiting.done()
    assert recorder.sizes == []
    other.execute("COMMIT")
    assert await asyncio.wait_for(waiting, 5) == [1]
    ticker.stop()
    other.close()
    assert values(path) == [3]
    await writer.close()


async def test_a_database_locked_before_the_first_connection_is_waited_for_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    # a file still in rollback-journal mode, locked exclusively: even switching it to WAL must wait
    path = str(tmp_path / "w.db")
    setup = sqlite3.connect(path)
    setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v INTEGER NOT NULL, pad TEXT)")
    setup.commit()
    setup.close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    writer = SqliteWriter(path)
    ticker = Ticker()
    waiting = asyncio.create_task(writer.submit(Recorder(), [5]))
    await ticker.more(20)  # blocked, the loop would have slept 5 s on the lock and this would time out
    assert not waiting.done()
    other.execute("COMMIT")
    other.close()
    assert await asyncio.wait_for(waiting, 5) == [1]
    ticker.stop()
    assert values(path) == [5]
    await writer.close()
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    check.close()


async def test_a_write_lock_held_past_the_timeout_fails_the_callers(tmp_path: Path) -> None:
    path = make_table(tmp_path / "w.db")
    clock = ManualClock()
    writer = SqliteWriter(path, lock_timeout=30, clock=clock)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ticker = Ticker()
    waiting = asyncio.create_task(writer.submit(Recorder(), [3]))
    await ticker.more(20)
    clock.now += 29.9
    await ticker.more(20)
    assert not waiting.done()  # still within the timeout on the writer's clock: still retried
    clock.now += 0.2
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        await asyncio.wait_for(waiting, 5)
    ticker.stop()
    other.execute("COMMIT")
    other.close()
    assert await writer.submit(Recorder(), [4]) == [1]  # the next batch works
    assert values(path) == [4]
    await writer.close()


async def test_close_writes_what_was_handed_over_and_a_later_submit_opens_again(tmp_path: Path) -> None:
    path = make_table(tmp_path / "w.db")
    writer = SqliteWriter(path)
    recorder = Recorder()
    pending = [asyncio.create_task(writer.submit(recorder, [v])) for v in range(20)]
    await asyncio.sleep(0)  # handed over, not yet written
    await writer.close()
    assert values(path) == list(range(20))
    await asyncio.gather(*pending)
    await writer.submit(recorder, [99])
    await writer.close()
    assert values(path)[-1] == 99


def main_file_size(path: str) -> int:
    return Path(path).stat().st_size


async def write_megabytes(writer: SqliteWriter, megabytes: int) -> None:
    def pad(connection: sqlite3.Connection, batch: Sequence[int]) -> list[None]:
        connection.executemany("INSERT INTO t (v, pad) VALUES (?, ?)", [(v, "x" * 100_000) for v in batch])
        return [None] * len(batch)

    for start in range(0, megabytes * 10, 10):
        await asyncio.gather(*(writer.submit(pad, v) for v in range(start, start + 10)))


async def test_commits_leave_checkpoints_to_a_worker_thread(tmp_path: Path) -> None:
    # more than SQLite's default autocheckpoint (1000 pages, about 4 MB) goes into the WAL: the
    # writer's own commits never copy it into the database file, its checkpoints (off the loop) do
    path = make_table(tmp_path / "w.db")
    size = main_file_size(path)
    never = SqliteWriter(path, checkpoint_seconds=3600)
    await write_megabytes(never, 6)
    assert main_file_size(path) == size
    assert never.checkpoints == 0
    await never.close()

    path = make_table(tmp_path / "c.db")
    size = main_file_size(path)
    often = SqliteWriter(path, checkpoint_seconds=0)
    await write_megabytes(often, 6)
    for _ in range(1000):  # up to 10 s on a slow disk
        if often.checkpoints and main_file_size(path) > size + 1_000_000:
            break
        await asyncio.sleep(0.01)
    assert often.checkpoints >= 1
    assert main_file_size(path) > size + 1_000_000
    await often.close()


def wal_size(path: str) -> int:
    return Path(f"{path}-wal").stat().st_size


def frames_after_one_more_row(path: str) -> int:
    """Adds a row and answers how many frames the WAL holds then: a few when the WAL started over."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA wal_autocheckpoint=0")
        connection.execute("INSERT INTO u (v) VALUES (1)")
        frames: int = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        return frames
    finally:
        connection.close()


def count_rows(path: str) -> int:
    connection = sqlite3.connect(path)
    try:
        count: int = connection.execute("SELECT count(*) FROM t").fetchone()[0]
        return count
    finally:
        connection.close()


async def test_a_wal_larger_than_its_limit_starts_over_after_the_writers_checkpoint(tmp_path: Path) -> None:
    path = make_table(tmp_path / "w.db")
    # a connection left open keeps the WAL file when the writer closes its own (the last one deletes it)
    kept = sqlite3.connect(path)
    assert kept.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    writer = SqliteWriter(path, checkpoint_seconds=3600, wal_limit_bytes=1_000_000)
    await write_megabytes(writer, 3)
    assert wal_size(path) > 3_000_000
    writer.checkpoint_seconds = 0  # the next write starts a checkpoint, and close waits for it

    def one(connection: sqlite3.Connection, batch: Sequence[int]) -> list[None]:
        connection.executemany("INSERT INTO t (v) VALUES (?)", [(v,) for v in batch])
        return [None] * len(batch)

    await writer.submit(one, 1)
    grown = wal_size(path)
    await writer.close()
    assert (writer.checkpoints, writer.restarts) == (1, 1)
    # the next commit writes the WAL from its start, into the file's own blocks
    assert frames_after_one_more_row(path) < 10
    assert wal_size(path) == grown
    assert count_rows(path) == 31
    kept.close()


def test_a_wal_still_in_use_past_its_passive_checkpoint_starts_over_only_past_its_limit(
    tmp_path: Path,
) -> None:
    path = make_table(tmp_path / "r.db")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    reader = sqlite3.connect(path, isolation_level=None)

    def write(rows: int) -> None:
        writer.executemany("INSERT INTO t (v, pad) VALUES (?, ?)", [(v, "x" * 100_000) for v in range(rows)])

    def read_then_write(rows: int) -> int:
        """A reader's snapshot taken, then more rows: a passive checkpoint copies only what it sees."""
        reader.execute("BEGIN")
        seen: int = reader.execute("SELECT count(*) FROM t").fetchone()[0]
        write(rows)
        return seen

    write(20)
    # as under writes that never pause: the passive checkpoint leaves frames behind, and the WAL never
    # starts over by itself, however large it grows
    assert read_then_write(5) == 20
    assert checkpoint_file(path, 1_000_000_000, between=lambda: reader.execute("COMMIT")) is False
    assert frames_after_one_more_row(path) > 500
    # past the limit, the restarting checkpoint copies them too, and the next commit writes from the start
    assert read_then_write(5) == 25
    assert checkpoint_file(path, 200_000, between=lambda: reader.execute("COMMIT")) is True
    assert frames_after_one_more_row(path) < 10
    # a reader still on an older snapshot: the restarting checkpoint gives up after its short wait
    assert read_then_write(20) == 30
    assert checkpoint_file(path, 1_000_000) is False
    reader.execute("COMMIT")
    assert checkpoint_file(path, 1_000_000) is True
    assert count_rows(path) == 50
    # started over, the WAL file keeps its size; what counts is the frames in use, which are few now
    writer.execute("INSERT INTO t (v, pad) VALUES (0, 'x')")
    assert wal_size(path) > 1_000_000
    assert checkpoint_file(path, 1_000_000) is False
    reader.close()
    writer.close()


def test_a_wal_past_its_limit_under_writes_that_never_pause_starts_over_without_stopping_them(
    tmp_path: Path,
) -> None:
    path = make_table(tmp_path / "busy.db")
    # a writer of another worker: holds the write lock most of the time, and only tries it (busy_timeout 0),
    # as the loop's writer does; a restarting checkpoint would have to take the lock from it
    writer = sqlite3.connect(path, isolation_level=None, timeout=0, check_same_thread=False)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.executemany("INSERT INTO t (v, pad) VALUES (?, ?)", [(v, "x" * 100_000) for v in range(20)])
    stop, refused, written = threading.Event(), [], []

    def write() -> None:
        while not stop.is_set():
            try:
                writer.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:
                refused.append(error)
                continue
            writer.execute("INSERT INTO t (v) VALUES (1)")
            stop.wait(0.002)  # the transaction's work
            writer.execute("COMMIT")
            written.append(1)
            stop.wait(0.0005)  # until the next batch

    thread = threading.Thread(target=write)
    thread.start()
    try:
        while len(written) < 3:  # the writer is under way
            stop.wait(0.001)
        assert checkpoint_file(path, 1_000_000) is True
    finally:
        stop.set()
        thread.join()
        writer.close()
    assert refused == []
    assert frames_after_one_more_row(path) < 10


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


def test_batch_insert_on_sqlite_stores_datetimes_as_the_drivers_adapter_does_and_none_as_null(
    tmp_path: Path,
) -> None:
    # the rows are prepared without the driver's adapters (see BatchInsert.prepared): what is stored is what
    # the stdlib driver stored before, a datetime as isoformat(" ") and None as NULL, in every column type
    metadata = MetaData()
    table = Table(
        "r",
        metadata,
        Column("n", Integer),
        Column("at", DateTime(timezone=True)),
        Column("s", String(10)),
        Column("j", JSON),
        Column("i", Integer),
    )
    path = tmp_path / "r.db"
    engine = create_engine(DatabaseSettings(url=f"sqlite+aiosqlite:///{path}"))
    insert = BatchInsert(table, ("n", "at", "s", "j", "i"))
    moments = [
        datetime(2026, 12, 4, 17, 33, 9, 318148, tzinfo=UTC),
        datetime(2026, 12, 4, 17, 33, 9, tzinfo=UTC),  # no microseconds: isoformat leaves them out
        datetime(2026, 12, 4, 17, 33, 9, 120000, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        datetime(2026, 1, 2, 3, 4, 5, 600),  # naive
        datetime(1, 1, 1, tzinfo=UTC),
    ]
    rows = [(n, at, None, None, None) for n, at in enumerate(moments)] + [(99, None, "x", {"a": 1}, 0)]
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("CREATE TABLE r (n INTEGER, at DATETIME, s VARCHAR(10), j JSON, i INTEGER)")
        insert.write_sqlite(connection, *insert.prepared(engine.dialect, rows))
        stored = connection.execute(
            "SELECT n, at, typeof(at), s, typeof(s), j, typeof(j), i, typeof(i) FROM r ORDER BY n"
        ).fetchall()
    finally:
        connection.close()
    expected = [
        (n, at.isoformat(" "), "text", None, "null", None, "null", None, "null")
        for n, at in enumerate(moments)
    ]
    assert stored == [*expected, (99, None, "null", "x", "text", '{"a":1}', "text", 0, "integer")]
