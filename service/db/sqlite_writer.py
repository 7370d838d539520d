"""Writes to one SQLite database file from the event loop: everything handed over on a loop is written in
one transaction, on the loop's own connection, once the first of it has waited `LINGER_TURNS` turns of the
loop for company.

The Redis store's journal (a request waits until its entries have committed), the decision log (nobody
waits), the workflow's case transitions and the webhook dispatcher's fan-out use it on SQLite. They share
one writer per file (`SqliteWriters`), so a turn's journal entries, decisions, transitions and claims go in
the same transaction and never queue for SQLite's write lock behind each other.

Why on the loop: a SQLite commit in WAL mode with `synchronous=NORMAL` writes to the WAL file without an
fsync, tens of microseconds plus a few per row. Handing it to another thread costs more than that: every
step of that thread needs the interpreter lock back from the busy loop, which under load gave it up only
every few milliseconds (the switch interval), so a request waited milliseconds for its journal entry and
whole waves of requests waited together, leaving the loop idle. The loop never waits here either:

- The write lock is only tried (`busy_timeout=0`). When another connection holds it (another worker
  process, or this process' async driver in the middle of a transaction), the batch is tried again a
  moment later, the loop serving requests meanwhile, and fails after `lock_timeout` seconds.
- A page changed inside a savepoint is first copied to the statement journal, which this connection
  keeps in memory (`temp_store=MEMORY`); past 64 KiB it would spill to a temporary file, a write() per
  page.
- This connection never checkpoints on commit (`wal_autocheckpoint=0`), since a checkpoint writes to the
  database file and syncs it. A worker thread runs a passive checkpoint at most every
  `checkpoint_seconds` instead, beside the writes.
- Under writes that never pause (two busy workers) a passive checkpoint never catches up with the end of
  the WAL, so SQLite never starts the WAL over and the file grows without end (500 MB in 40 s under the
  operator benchmark, each append into new blocks the kernel zeroes first). When the WAL's frames take
  more than `wal_limit_bytes` after the passive checkpoint, the thread runs more passive ones, a
  millisecond apart, each copying the few frames written during the one before, until one has copied every
  frame before the next write begins: SQLite then lets that write start the WAL over, into blocks the file
  already has, when no reader is on the WAL. No writer waits for any of it. Only when that has not
  happened within `CATCH_UP_SECONDS` does the thread ask for a restarting checkpoint, which takes the write
  lock (writers of every worker find it taken and try again, as they do for one another) and waits at most
  `RESTART_WAIT_SECONDS` for it and for readers of old frames; under load it held every worker's writes
  for 16 to 36 ms. When it cannot have them in time it gives up, and the next round tries again.

A batch is one transaction. Each kind of write (one `write` function, taking the connection and the items
handed over with it) runs in a savepoint of its own: when it raises, only its items fail and are rolled
back, and the others commit. When the transaction itself fails, every item of it fails and the connection
is dropped; the next batch opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.engine import URL, make_url

from service.db.engine import SQLITE_BUSY_TIMEOUT_SECONDS, sqlite_pragmas

Item = TypeVar("Item")
Result = TypeVar("Result")
WriteBatch = Callable[[sqlite3.Connection, Sequence[Item]], Sequence[Result]]

log = logging.getLogger(__name__)

MAX_ITEMS = 500  # items of one transaction; more wait for the next one, on the next turn of the loop
# Turns of the loop a transaction waits for company before it is written. A turn of an idle loop takes
# microseconds, so a lone request hardly waits; under load a turn serves many requests, and fewer, larger
# transactions cost less (a commit is tens of microseconds) and take the write lock less often. Under
# `serve --workers 2` and 32 connections: the worker's CPU per reservation from 166 to 150 µs.
LINGER_TURNS = 3
_RETRY_FIRST = 0.0005  # seconds until the write lock is tried again, doubling up to _RETRY_MAX
_RETRY_MAX = 0.002  # a lock held by the other worker is mostly free again within a millisecond or two
WAL_LIMIT_BYTES = 128 * 1024 * 1024  # a WAL whose frames take more after a passive checkpoint is started over
_WAL_FRAME_HEADER = 24  # bytes before each page in the WAL file
RESTART_WAIT_SECONDS = 0.02  # how long a restarting checkpoint waits for writers and readers to let it
CATCH_UP_SECONDS = 0.25  # how long passive checkpoints try to let a write start the WAL over
_CATCH_UP_PAUSE = 0.001  # seconds between those passive checkpoints: the writes come meanwhile


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


@dataclass(eq=False)
class _Pending:
    write: WriteBatch[Any, Any]
    item: Any
    future: asyncio.Future[Any]


@dataclass(eq=False)
class _LoopState:
    """One event loop's connection and what was handed over on that loop and not yet written."""

    connection: sqlite3.Connection | None = None
    pending: list[_Pending] = field(default_factory=list)
    flush: asyncio.Handle | None = None
    locked_since: float | None = None  # when the write lock was first found taken, while it still is
    retry: float = _RETRY_FIRST
    turns: int = 0  # turns of the loop the pending items have waited for company (see LINGER_TURNS)
    last_checkpoint: float = 0.0  # or when this state began
    checkpoint: asyncio.Task[None] | None = None


class SqliteWriter:
    """Batched writes to one SQLite file, on the event loop that hands them over (see the module)."""

    def __init__(
        self,
        path: str,
        *,
        lock_timeout: float = SQLITE_BUSY_TIMEOUT_SECONDS,
        checkpoint_seconds: float = 1.0,
        wal_limit_bytes: int = WAL_LIMIT_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.wal_limit_bytes = wal_limit_bytes
        self.clock = clock  # seconds, monotonic: the lock timeout and the checkpoint interval count on it
        self.lock_timeout = lock_timeout
        self.checkpoint_seconds = checkpoint_seconds
        self.transactions = 0  # committed so far (all loops)
        self.checkpoints = 0  # passive checkpoints run so far
        self.restarts = 0  # of them, those after which the WAL started over (see checkpoint_file)
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._last: tuple[asyncio.AbstractEventLoop, _LoopState] | None = None  # the loop seen last

    async def submit(self, write: WriteBatch[Item, Result], item: Item) -> Result:
        """Write `item` with `write`, in the next transaction of this loop (see the module); returns what
        `write` gave for it once that transaction has committed."""
        loop = asyncio.get_running_loop()
        state = self._state(loop)
        future: asyncio.Future[Result] = loop.create_future()
        state.pending.append(_Pending(write, item, future))
        if state.flush is None:
            state.flush = loop.call_soon(self._flush, loop, state)
        return await future

    def read(self, query: Callable[[sqlite3.Connection], Result]) -> Result:
        """`query` run on this loop's connection, between its transactions (a transaction begins and
        commits within one call on the loop, so a caller on the loop never finds one open). A read in WAL
        mode never waits for a writer; and this connection's page cache outlives its own commits, where
        another connection of this process finds its cache stale after each of them and reads every page
        again. Raises what `query` raises; after an error the connection is opened again."""
        state = self._state(asyncio.get_running_loop())
        try:
            if state.connection is None:
                state.connection = self._connect()
            return query(state.connection)
        except sqlite3.Error:
            self._drop(state)
            raise

    def _state(self, loop: asyncio.AbstractEventLoop) -> _LoopState:
        last = self._last
        if last is not None and last[0] is loop:
            return last[1]
        found = self._states.get(loop)
        state = self._states[loop] = _LoopState(last_checkpoint=self.clock()) if found is None else found
        self._last = (loop, state)
        return state

    def _connect(self) -> sqlite3.Connection:
        # timeout=0: the loop never sleeps on a lock, not even for the pragmas (a busy error here is
        # tried again like a taken write lock: see _flush)
        connection = sqlite3.connect(self.path, isolation_level=None, timeout=0)
        sqlite_pragmas(connection)
        connection.execute("PRAGMA busy_timeout=0")
        connection.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run off the loop: see _checkpoint
        connection.execute("PRAGMA temp_store=MEMORY")  # the statement journal of savepoints: see the module
        return connection

    def _drop(self, state: _LoopState) -> None:
        if state.connection is not None:
            with contextlib.suppress(sqlite3.Error):
                state.connection.close()
            state.connection = None

    def _flush(self, loop: asyncio.AbstractEventLoop, state: _LoopState, linger: bool = True) -> None:
        """Write what is pending (up to MAX_ITEMS) in one transaction, once it has waited LINGER_TURNS turns
        of the loop (not with `linger` False), or try again shortly when another connection holds the write
        lock."""
        if state.flush is not None:
            state.flush.cancel()
            state.flush = None
        if not state.pending:
            return
        if linger and state.turns < LINGER_TURNS and len(state.pending) < MAX_ITEMS:
            state.turns += 1  # the transaction waits another turn of the loop for company
            state.flush = loop.call_soon(self._flush, loop, state)
            return
        try:
            if state.connection is None:
                state.connection = self._connect()
            state.connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            now = self.clock()
            if _is_busy(error):
                if state.locked_since is None:
                    state.locked_since, state.retry = now, _RETRY_FIRST
                if now - state.locked_since < self.lock_timeout:
                    state.flush = loop.call_later(state.retry, self._flush, loop, state)
                    state.retry = min(state.retry * 2, _RETRY_MAX)
                    return
            # not the lock, or held longer than lock_timeout: what is pending fails
            state.locked_since, state.turns = None, 0
            self._drop(state)
            batch, state.pending = state.pending, []
            _settle([(p.future, None, error) for p in batch])
            return
        state.locked_since, state.turns = None, 0
        batch, state.pending = state.pending[:MAX_ITEMS], state.pending[MAX_ITEMS:]
        _settle(self._write(state.connection, batch, state))
        if state.pending:
            state.flush = loop.call_soon(self._flush, loop, state)
        if state.connection is not None:
            self._maybe_checkpoint(loop, state)

    def _write(
        self, connection: sqlite3.Connection, batch: list[_Pending], state: _LoopState
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        """The open transaction's writes and its commit; what each caller gets."""
        groups: dict[WriteBatch[Any, Any], list[_Pending]] = {}
        for pending in batch:
            groups.setdefault(pending.write, []).append(pending)
        settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            for write, members in groups.items():
                connection.execute("SAVEPOINT batch")
                try:
                    results = write(connection, [p.item for p in members])
                    if len(results) != len(members):
                        name = getattr(write, "__name__", repr(write))
                        raise RuntimeError(f"{name} gave {len(results)} results for {len(members)} items")
                except Exception as error:  # this kind of write fails alone
                    connection.execute("ROLLBACK TO batch")
                    connection.execute("RELEASE batch")
                    settled += [(p.future, None, error) for p in members]
                else:
                    connection.execute("RELEASE batch")
                    settled += [(p.future, result, None) for p, result in zip(members, results, strict=True)]
            connection.execute("COMMIT")
        except Exception as error:  # the transaction failed: nothing of it was written
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            self._drop(state)
            return [(p.future, None, error) for p in batch]
        self.transactions += 1
        return settled

    def _maybe_checkpoint(self, loop: asyncio.AbstractEventLoop, state: _LoopState) -> None:
        now = self.clock()
        if state.checkpoint is not None or now - state.last_checkpoint < self.checkpoint_seconds:
            return
        state.last_checkpoint = now
        state.checkpoint = loop.create_task(self._checkpoint(state))

    async def _checkpoint(self, state: _LoopState) -> None:
        try:
            restarted = await asyncio.to_thread(checkpoint_file, self.path, self.wal_limit_bytes)
            self.checkpoints += 1
            self.restarts += restarted
        except sqlite3.Error as error:  # the next one tries again; the WAL only grows meanwhile
            log.warning("checkpoint of %s failed: %s", self.path, error)
        finally:
            state.checkpoint = None

    async def close(self) -> None:
        """Write what this loop handed over, wait for its checkpoint, and close its connection (a later
        `submit` opens a new one)."""
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            return
        while state.pending:
            self._flush(loop, state, linger=False)
            if state.pending:  # the write lock is taken: _flush tries again shortly
                await asyncio.sleep(state.retry)
        if state.checkpoint is not None:
            await asyncio.shield(state.checkpoint)
        self._drop(state)
        self._states.pop(loop, None)
        self._last = None


def _is_busy(error: sqlite3.Error) -> bool:
    return getattr(error, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def checkpoint_file(path: str, wal_limit_bytes: int, between: Callable[[], object] | None = None) -> bool:
    """A passive checkpoint of the database file at `path`; when its WAL's frames still take more than
    `wal_limit_bytes`, more passive ones until a write starts the WAL over, and a restarting one if none has
    within `CATCH_UP_SECONDS` (see the module). True when the WAL was made to start over. `between` runs
    after the first passive checkpoint: the writes that came meanwhile, in a test."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=RESTART_WAIT_SECONDS)
    try:
        frames: int = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        if between is not None:
            between()
        # the frames in use, not the file's size: a WAL started over keeps its size, and its file would
        # otherwise call for a restart, stopping every writer for a while, at every checkpoint after
        page_size: int = connection.execute("PRAGMA page_size").fetchone()[0]
        limit = wal_limit_bytes // (page_size + _WAL_FRAME_HEADER)
        if frames <= limit:
            return False
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while time.monotonic() < deadline:
            # each copies what was written during the one before: a few frames, once it has caught up
            logged: int = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
            if logged <= limit:  # a write found every frame copied and started the WAL over
                return True
            time.sleep(_CATCH_UP_PAUSE)  # for the next write, which starts the WAL over once all is copied
        busy: int = connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
        return busy == 0
    finally:
        connection.close()


def _settle(settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in settled:
        if future.done():  # the caller gave up waiting (cancelled)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class SqliteWriters:
    """One writer per database file for the users that share it: the app gives one to its decision log and
    to its stock journal (`service.app.start_services`)."""

    def __init__(self) -> None:
        self._by_file: dict[str, SqliteWriter] = {}

    def for_file(self, path: str) -> SqliteWriter:
        """The writer of the database file at `path`, the same one for every name of that file."""
        key = os.path.realpath(path)
        writer = self._by_file.get(key)
        if writer is None:
            writer = self._by_file[key] = SqliteWriter(path)
        return writer

    def for_url(self, url: str | URL) -> SqliteWriter | None:
        """The writer of a SQLite file's URL; None for another database (see `sqlite_file`)."""
        path = sqlite_file(url)
        return None if path is None else self.for_file(path)
