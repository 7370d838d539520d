"""The workers of `serve --workers N` under uvicorn share one listening socket and take its connections
evenly (service.workers): `BalancedServer`s on one loop, each on its own descriptor of the socket, stand
for the worker processes."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from service.workers import BalancedServer, BalancingLoop, SharedListener

Address = tuple[str, int]


class Held(asyncio.Protocol):
    """A connection a worker accepted, kept open until the client closes it."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.port = transport.get_extra_info("peername")[1]
        self.worker.open.add(self.port)
        self.worker.accepted += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.open.discard(self.port)


class Worker:
    def __init__(self) -> None:
        self.open: set[int] = set()  # the client ports of its open connections
        self.accepted = 0


@asynccontextmanager
async def workers(count: int, stuck: int = 0) -> AsyncIterator[tuple[Address, list[Worker]]]:
    """`count` workers serving one shared listening socket, and `stuck` more that never accept."""
    listener = SharedListener.bound("127.0.0.1", 0, workers=count + stuck)
    loop = asyncio.get_running_loop()
    copies = [
        SharedListener(listener.family, socket.SOCK_STREAM, fileno=os.dup(listener.fileno()))
        for _ in range(count)
    ]
    for copy in copies:
        copy.table = listener.table
    for _ in range(stuck):  # a live worker holding no connection, whose loop never comes to accept
        listener.claim()
    found = [Worker() for _ in range(count)]
    servers = []
    try:
        for worker, copy in zip(found, copies, strict=True):
            server = await loop.create_server(lambda worker=worker: Held(worker), sock=copy)
            assert isinstance(server, BalancedServer)
            servers.append(server)
        yield listener.getsockname(), found
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()
        for one in [*copies, listener]:
            one.close()


async def connect(address: Address, count: int) -> list[asyncio.StreamWriter]:
    clients = await asyncio.gather(*(asyncio.open_connection(*address) for _ in range(count)))
    return [writer for _, writer in clients]


async def until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 (polls what the loop's callbacks change)
        await asyncio.sleep(0.002)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    loop = BalancingLoop()
    try:
        loop.run_until_complete(asyncio.wait_for(test(), 30))  # a failure, rather than a hang
    finally:
        loop.close()


def test_connections_arriving_at_once_are_split_evenly_between_the_workers() -> None:
    async def test() -> None:
        async with workers(2) as (address, (first, second)):
            clients = await connect(address, 16)
            await until(lambda: first.accepted + second.accepted == 16)
            assert (len(first.open), len(second.open)) == (8, 8)
            for client in clients:
                client.close()

    run(test)


def test_the_worker_whose_clients_left_is_given_the_next_connections() -> None:
    async def test() -> None:
        async with workers(2) as (address, (first, second)):
            clients = await connect(address, 8)
            await until(lambda: first.accepted + second.accepted == 8)
            leaving = [c for c in clients if c.get_extra_info("sockname")[1] in first.open]
            for client in leaving:
                client.close()
            await until(lambda: not first.open)  # each connection counted out as the worker loses it
            clients += await connect(address, len(leaving))
            await until(lambda: first.accepted + second.accepted == 8 + len(leaving))
            assert (len(first.open), len(second.open)) == (len(leaving), 8 - len(leaving))
            for client in clients:
                client.close()

    run(test)


def test_a_worker_that_never_accepts_does_not_keep_connections_waiting() -> None:
    async def test() -> None:
        # the stuck worker holds fewer connections all along: the other takes each after a short grace
        async with workers(1, stuck=1) as (address, (only,)):
            clients = await connect(address, 3)
            await until(lambda: only.accepted == 3)
            for client in clients:
                client.close()

    run(test)
