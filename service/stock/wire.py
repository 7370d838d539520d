"""A lean client for the stock store's Lua scripts: EVALSHA over one pipelined connection, replies parsed
by hiredis.

Every stock decision is one or two script calls, so the client's own cost per call counts: redis-py's
asyncio client spends most of a call's CPU time in its connection pool, timeouts and command packing.
This client writes each command to one connection (commands of concurrent requests share it; Redis
answers in order, so replies are matched first in, first out), packs with hiredis and parses with hiredis'
reader. A command goes out at once when nothing else waits for Redis; while earlier commands are still
being answered it would only queue in Redis' socket, so it waits for the end of the event loop's turn and
goes out with the other commands of that turn in one write (one system call on each side instead of one
per command; the first command of a burst is never held back). It carries the scripts and the ready
availability read (`commands`); everything else (reservation reads, the sweeper, the rebuild) still goes
through redis-py.

Failures read as redis-py's exceptions, so callers handle both clients alike: a lost or refused
connection is `ConnectionError` (every call waiting on it fails at once), a reply slower than the
timeout is `TimeoutError` (the connection is dropped: later replies could not be matched any more), a
server still loading its data is `BusyLoadingError`, an error reply is `ResponseError`. A script the
server does not know (restarted, `SCRIPT FLUSH`) is sent once in full with EVAL, which caches it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis import exceptions as redis_errors

WATCH_SECONDS = 0.25  # how often a connection checks its oldest waiting call against the timeout


class _Connection(asyncio.Protocol):
    """One connection: commands written in order, replies handed to the calls in the same order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reply_timeout: float) -> None:
        self.loop = loop
        self.reply_timeout = reply_timeout
        self.reader = hiredis.Reader()
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._outgoing: list[bytes] = []  # commands held until the end of this turn of the loop

    # ---- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._watch = self.loop.call_later(WATCH_SECONDS, self._check)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as error:
                self.abort(redis_errors.ConnectionError(f"unreadable reply from Redis: {error}"))
                return
            if reply is False:
                return
            if not waiting:
                self.abort(redis_errors.ConnectionError("a reply from Redis that no call was waiting for"))
                return
            future = waiting.popleft()[0]
            if not future.done():  # a cancelled caller's reply is read and dropped
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(self.lost or redis_errors.ConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    # ---- calls ------------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return self.lost is None and self.transport is not None and not self.transport.is_closing()

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self.loop.create_future()
        if not self.usable:
            future.set_exception(self.lost or redis_errors.ConnectionError("connection to Redis closed"))
            return future
        busy = bool(self.waiting)
        self.waiting.append((future, self.loop.time() + self.reply_timeout))
        if busy:
            # Redis is still on earlier commands: this one would wait there anyway, so it goes out with
            # the others of this turn in one write after it
            if not self._outgoing:
                self.loop.call_soon(self._write)
            self._outgoing.append(packed)
        else:
            assert self.transport is not None
            self.transport.write(packed)
        return future

    def send_all(self, packed: Sequence[bytes]) -> list[asyncio.Future[Any]]:
        """Several commands in one write (one after the other in Redis), a future for each reply."""
        if not self.usable or self.waiting:
            return [self.send(command) for command in packed]
        assert self.transport is not None
        futures: list[asyncio.Future[Any]] = []
        deadline = self.loop.time() + self.reply_timeout
        for _ in packed:
            future: asyncio.Future[Any] = self.loop.create_future()
            self.waiting.append((future, deadline))
            futures.append(future)
        self.transport.write(b"".join(packed))
        return futures

    def _write(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        # lost meanwhile: the waiting calls have already failed with the reason
        if outgoing and self.usable:
            assert self.transport is not None
            self.transport.write(b"".join(outgoing))

    def abort(self, error: Exception) -> None:
        if self.lost is None:
            self.lost = error
        if self.transport is not None:
            self.transport.abort()
        self._fail(error)

    def _fail(self, error: Exception) -> None:
        if self.lost is None:
            self.lost = error
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        while self.waiting:
            future = self.waiting.popleft()[0]
            if not future.done():
                future.set_exception(error)

    def _check(self) -> None:
        self._watch = None
        if self.lost is not None:
            return
        if self.waiting and self.waiting[0][1] <= self.loop.time():
            self.abort(redis_errors.TimeoutError(f"Redis did not answer within {self.reply_timeout:g} s"))
            return
        self._watch = self.loop.call_later(WATCH_SECONDS, self._check)


class ScriptClient:
    """Runs Lua scripts by SHA1 on the Redis that `url` names (redis://, rediss:// or unix://, with the
    user, password and database number the URL gives)."""

    def __init__(self, url: str, *, connect_timeout: float = 1.0, reply_timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
        self._unix_path = parts.path if parts.scheme == "unix" else None
        self._host = parts.hostname or "localhost"
        self._port = parts.port or 6379
        self._ssl = parts.scheme == "rediss"
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        db = parts.path.lstrip("/") if parts.scheme != "unix" else ""
        query = dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair)
        self._db = int(db or query.get("db", "0") or 0)
        self._connect_timeout = connect_timeout
        self._reply_timeout = reply_timeout
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        # awaited on every new connection before its first script (the stock store checks its state)
        self.on_connect: Callable[[], Awaitable[None]] | None = None

    async def evalsha(self, sha: str, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The script's reply; EVAL with the full text when the server has not cached it."""
        connection = self._connection
        if connection is None or connection.loop is not asyncio.get_running_loop() or not connection.usable:
            connection = await self._connect()
        reply = await connection.send(hiredis.pack_command(("EVALSHA", sha, len(keys), *keys, *args)))
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            reply = await connection.send(hiredis.pack_command(("EVAL", script, len(keys), *keys, *args)))
        return _checked(reply)

    async def commands(self, packed: Sequence[bytes]) -> list[Any]:
        """The replies of commands packed with `hiredis.pack_command`, sent together; an error reply raises
        as redis-py would (after every reply has arrived, so none is left unread)."""
        connection = self._connection
        if connection is None or connection.loop is not asyncio.get_running_loop() or not connection.usable:
            connection = await self._connect()
        futures = connection.send_all(packed)
        # Redis answers in order, so every reply has arrived once the last one has (or every call failed
        # with the connection): one wait instead of a gathering future and a callback per command
        with contextlib.suppress(Exception):
            await futures[-1]
        errors = [future.exception() for future in futures]  # each one retrieved, so none is logged
        for error in errors:
            if error is not None:
                raise error
        return [_checked(future.result()) for future in futures]

    async def connected(self) -> None:
        """Open the connection now unless it is open (running `on_connect` for a new one)."""
        connection = self._connection
        if connection is None or connection.loop is not asyncio.get_running_loop() or not connection.usable:
            await self._connect()

    async def _connect(self) -> _Connection:
        """The open connection, or a new one; concurrent callers share one attempt."""
        loop = asyncio.get_running_loop()
        pending = self._connecting
        if pending is None or pending.get_loop() is not loop:
            pending = self._connecting = loop.create_task(self._open(loop))
        try:
            connection = await asyncio.shield(pending)
        finally:
            if pending.done() and self._connecting is pending:
                self._connecting = None
        return connection

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        def protocol() -> _Connection:
            return _Connection(loop, self._reply_timeout)

        try:
            if self._unix_path is not None:
                opening = loop.create_unix_connection(protocol, self._unix_path)
            else:
                context = ssl.create_default_context() if self._ssl else None
                opening = loop.create_connection(protocol, self._host, self._port, ssl=context)
            _, connection = await asyncio.wait_for(opening, self._connect_timeout)
        except (OSError, TimeoutError) as error:
            where = self._unix_path or f"{self._host}:{self._port}"
            raise redis_errors.ConnectionError(f"cannot connect to Redis at {where}: {error}") from error
        handshake: list[tuple[Any, ...]] = []
        if self._password is not None:
            handshake.append(
                ("AUTH", self._username, self._password) if self._username else ("AUTH", self._password)
            )
        if self._db:
            handshake.append(("SELECT", self._db))
        try:
            for command in handshake:
                _checked(await connection.send(hiredis.pack_command(command)))
        except Exception:
            connection.abort(redis_errors.ConnectionError("Redis refused the connection's set-up"))
            raise
        if self.on_connect is not None:
            await self.on_connect()
        old = self._connection
        self._connection = connection
        # one left on another (finished) event loop is dropped with that loop, not touched from this one
        if old is not None and old is not connection and old.loop is loop and old.usable:
            old.abort(redis_errors.ConnectionError("replaced by a new connection"))
        return connection

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if (
            connection is not None
            and connection.transport is not None
            and connection.loop is asyncio.get_running_loop()
        ):
            connection.lost = connection.lost or redis_errors.ConnectionError("client closed")
            connection.transport.close()


def _checked(reply: Any) -> Any:
    """The reply, or the exception redis-py would raise for it."""
    if isinstance(reply, hiredis.ReplyError):
        message = str(reply)
        if message.startswith("LOADING"):
            raise redis_errors.BusyLoadingError(message)
        if message.startswith(("NOAUTH", "WRONGPASS")):
            raise redis_errors.AuthenticationError(message)
        raise redis_errors.ResponseError(message)
    return reply
