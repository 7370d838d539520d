"""A real HTTP receiver on loopback for webhook tests: answers each request as the test's script says.

`script(request)` answers a status code, or None to never answer (the sender times out or is stopped).
Every request is kept, with its headers and raw body, and `arrived` wakes whoever waits for one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    script: Callable[[Received], int | None]
    url: str = ""
    requests: list[Received] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _hung: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, count: int) -> None:
        async with self.arrived:
            await self.arrived.wait_for(lambda: len(self.requests) >= count)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Received(headers, body)
            status = self.script(request)
            async with self.arrived:
                self.requests.append(request)
                self.arrived.notify_all()
            if status is None:
                await self._hung.wait()  # never answers while the test runs
                return
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def receiver(script: Callable[[Received], int | None]) -> AsyncIterator[Receiver]:
    found = Receiver(script)
    server = await asyncio.start_server(found._serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    found.url = f"http://127.0.0.1:{port}/hooks"
    try:
        yield found
    finally:
        found._hung.set()
        server.close()
        await server.wait_closed()
