"""A thread that owns one connection to a SQLite database file and writes what callers hand it, in batches.

The Redis store's journal uses it on SQLite: each request waits until its entries have committed. Through
the async driver a batch is several round trips between the event loop and the driver's thread (a cursor,
the statement, the commit), and under load every one of them waits for a turn of the busy event loop and
for the interpreter lock. Here a caller hands its item over and is called back once: the thread takes every
item queued so far (a group commit: the next batch gathers while one is written), writes them with one
call of `write_batch`, and settles every caller with one callback into the event loop.

`write_batch` gets the connection in autocommit mode: a single statement is its own transaction, and a
batch of several statements opens one with `in_transaction` (or runs them with `execute_all`). When it raises, every item of the batch
fails with that error and the connection is dropped; the next batch opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import URL, make_url

from service.db.engine import sqlite_pragmas

T = TypeVar("T")
Item = TypeVar("Item")
Result = TypeVar("Result")

_Pending = tuple[Any, asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


def sqlite_file(url: str | URL) -> str | None:
    """The database file of a SQLite URL; None for another database, an in-memory one or a URI filename."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    # in memory, or a URI filename (its options would need the URI form): written through the engine
    if not database or database == ":memory:" or "mode" in parsed.query or "uri" in parsed.query:
        return None
    return database


def _settle(settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in settled:
        if future.done():  # the caller gave up waiting (cancelled)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class SqliteWriter(Generic[Item, Result]):
    def __init__(
        self,
        path: str,
        write_batch: Callable[[sqlite3.Connection, Sequence[Item]], Sequence[Result]],
        *,
        max_batch: int = 500,
    ) -> None:
        self.path = path
        self._write_batch = write_batch
        self._max_batch = max_batch
        self._items: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def submit(self, item: Item) -> Result:
        """Write `item` with others handed over meanwhile; returns what `write_batch` gave for it."""
        self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._items.put((item, loop, future))
        return await future

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="sqlite-writer", daemon=True)
                self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None)
        sqlite_pragmas(connection)
        return connection

    def _next_batch(self) -> tuple[list[_Pending], bool]:
        """What is queued (waiting for the first item); True when close asked the thread to stop."""
        first = self._items.get()
        if first is None:
            return [], True
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                more = self._items.get_nowait()
            except queue.Empty:
                break
            if more is None:
                return batch, True
            batch.append(more)
        return batch, False

    def _work(self) -> None:
        connection: sqlite3.Connection | None = None
        stopping = False
        while not stopping:
            batch, stopping = self._next_batch()
            if not batch:
                break
            results: Sequence[Any] = ()
            error: BaseException | None = None
            try:
                if connection is None:
                    connection = self._connect()
                results = self._write_batch(connection, [item for item, _, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"write_batch gave {len(results)} results for {len(batch)} items")
            except BaseException as failure:  # handed to every waiting caller; the thread goes on
                error = failure
                if connection is not None:
                    with contextlib.suppress(Exception):
                        if connection.in_transaction:
                            connection.rollback()
                        connection.close()
                    connection = None
            by_loop: dict[
                asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]
            ]
            by_loop = {}
            for i, (_, loop, future) in enumerate(batch):
                by_loop.setdefault(loop, []).append((future, None if error else results[i], error))
            for loop, settled in by_loop.items():
                with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits there
                    loop.call_soon_threadsafe(_settle, settled)
        if connection is not None:
            connection.close()

    async def close(self) -> None:
        """Write what was handed over so far, then stop the thread and close its connection."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._items.put(None)
            await asyncio.to_thread(thread.join)


def execute_all(connection: sqlite3.Connection, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
    """Run statements as one transaction: a single statement is its own, several get one."""
    if len(statements) == 1:
        connection.execute(*statements[0])
    else:
        in_transaction(connection, lambda: [connection.execute(*statement) for statement in statements])


def in_transaction(connection: sqlite3.Connection, statements: Callable[[], T]) -> T:
    """Run `statements` (which use `connection`) in one write transaction, rolled back if they fail."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = statements()
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return result
