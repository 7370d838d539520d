"""Connections spread evenly over the worker processes of `retail-policy serve --workers N` under uvicorn.

The parent binds one listening socket (`SharedListener`) and hands it to every worker, with a table in
shared memory of each worker's open connections. A worker's event loop (`BalancingLoop`, uvicorn's loop
factory) accepts from that socket itself: a worker that holds more connections than another live worker
lets the connection wait for that one, and takes it after `ACCEPT_GRACE_SECONDS` if nobody has (that
worker may be busy or stuck). Kept-alive connections therefore end up split as evenly as they can be,
whatever the client's addresses: the kernel's spread over one socket per worker (SO_REUSEPORT) hashes
them, and 16 connections over two workers land 11/5 or worse about one time in five; on one shared socket
served by uvloop's own server, the first worker to wake takes every connection waiting.

A worker that stops (graceful shutdown, a crash) leaves what waits in the socket's queue to the others:
nothing queued belongs to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import select
import socket
from collections.abc import Callable
from multiprocessing import get_context
from multiprocessing.reduction import DupFd
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

import uvloop

# How long a connection may wait for a worker holding fewer connections before one holding more takes it.
ACCEPT_GRACE_SECONDS = 0.05
# How often a worker that lets a connection wait looks again.
RETRY_SECONDS = 0.001


class SharedListener(socket.socket):
    """The listening socket all workers accept from, and the table of their open connections: per
    slot the worker's pid (0: free) and its count. A worker claims a slot when it starts serving."""

    table: SynchronizedArray[int]

    @classmethod
    def bound(cls, host: str, port: int, workers: int, backlog: int = 2048) -> SharedListener:
        """Listening on `host`:`port` (a free port for 0), with room for `workers` (and as many
        replacements starting while the workers they replace stop)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = cls(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        sock.table = get_context("spawn").Array(ctypes.c_long, 4 * workers)
        return sock

    def __reduce__(self) -> tuple[Callable[..., SharedListener], tuple[Any, ...]]:
        # only while a worker process is being started (DupFd and the shared table refuse otherwise)
        return (_rebuild, (self.family, DupFd(self.fileno()), self.table))

    def counts(self, own_slot: int) -> list[int]:
        """The open connections of each other live worker."""
        table = self.table
        found = []
        for slot in range(0, len(table), 2):
            pid = table[slot]
            if slot == own_slot or pid == 0:
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            except PermissionError:
                pass
            found.append(table[slot + 1])
        return found

    def claim(self) -> int:
        """A free slot of the table (or one a dead worker left), now this process'."""
        with self.table.get_lock():
            table = self.table
            for slot in range(0, len(table), 2):
                pid = table[slot]
                if pid:
                    try:
                        os.kill(pid, 0)
                        continue
                    except ProcessLookupError:
                        pass
                    except PermissionError:
                        continue
                table[slot], table[slot + 1] = os.getpid(), 0
                return slot
        raise RuntimeError("no free slot in the workers' connection table")

    def release(self, slot: int) -> None:
        with self.table.get_lock():
            if self.table[slot] == os.getpid():
                self.table[slot], self.table[slot + 1] = 0, 0


def _rebuild(family: int, fd: Any, table: SynchronizedArray[int]) -> SharedListener:
    # `fd`: the DupFd made by __reduce__, the descriptor of this process' own copy of the socket
    sock = SharedListener(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=fd.detach())
    sock.table = table
    return sock


class BalancedServer(asyncio.AbstractServer):
    """One worker accepting from a `SharedListener`; what `BalancingLoop.create_server` returns for it."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, listener: SharedListener, factory: Callable[[], Any]
    ) -> None:
        self._loop = loop
        self._listener = listener
        self._factory = factory
        self._fd = listener.fileno()
        self._slot = listener.claim()
        self._open = 0  # connections accepted and not yet lost
        self._waiting_since: float | None = None  # a connection waits for a worker holding fewer
        self._retry: asyncio.TimerHandle | None = None
        self._serving = True
        self._closed = loop.create_future()
        listener.setblocking(False)
        loop.add_reader(self._fd, self._accept)

    def _count(self, change: int) -> None:
        self._open += change
        self._listener.table[self._slot + 1] = self._open

    def _protocol(self) -> Any:
        """The server's protocol for a connection, which also counts the connection out when lost."""
        protocol = self._factory()
        lost = protocol.connection_lost

        def connection_lost(error: Exception | None) -> None:
            try:
                lost(error)
            finally:
                self._count(-1)

        protocol.connection_lost = connection_lost
        return protocol

    def _accept(self) -> None:
        while self._serving:
            others = self._listener.counts(self._slot)
            if others and self._open > min(others):
                now = self._loop.time()
                if self._waiting_since is None:
                    self._waiting_since = now
                if now - self._waiting_since < ACCEPT_GRACE_SECONDS:
                    self._wait()
                    return
            try:
                connection, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                self._waiting_since = None
                return
            except OSError:  # e.g. out of file descriptors: the connection waits in the queue
                self._wait()
                return
            # the next connection waits its own grace for a worker holding fewer
            self._waiting_since = None
            self._count(1)
            self._loop.create_task(self._connect(connection))

    def _wait(self) -> None:
        """Stop watching the socket; look again shortly whether the connection is still waiting."""
        if self._retry is None:
            self._loop.remove_reader(self._fd)
            self._retry = self._loop.call_later(RETRY_SECONDS, self._look_again)

    def _look_again(self) -> None:
        self._retry = None
        if not self._serving:
            return
        readable, _, _ = select.select([self._fd], [], [], 0)
        if not readable:  # another worker took it
            self._waiting_since = None
        self._loop.add_reader(self._fd, self._accept)
        if readable:
            self._accept()

    async def _connect(self, connection: socket.socket) -> None:
        try:
            connection.setblocking(False)
            with contextlib.suppress(OSError):
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await self._loop.connect_accepted_socket(self._protocol, connection)
        except OSError:  # the client went away before it was served: never made, never lost
            connection.close()
            self._count(-1)

    def close(self) -> None:
        if not self._serving:
            return
        self._serving = False
        self._loop.remove_reader(self._fd)
        if self._retry is not None:
            self._retry.cancel()
        self._listener.release(self._slot)
        if not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        await self._closed

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        return None

    async def serve_forever(self) -> None:
        await self._closed


class BalancingLoop(uvloop.Loop):
    """uvloop, serving a `SharedListener` with a `BalancedServer` (uvicorn's loop factory in workers)."""

    async def create_server(self, protocol_factory: Callable[[], Any], *args: Any, **kwargs: Any) -> Any:
        sock = kwargs.get("sock")
        if isinstance(sock, SharedListener):
            return BalancedServer(self, sock, protocol_factory)
        return await super().create_server(protocol_factory, *args, **kwargs)
