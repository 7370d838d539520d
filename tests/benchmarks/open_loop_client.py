"""An open-loop HTTP/1.1 load client in a process of its own, for latency at a fixed offered rate.

Request i is due at `start + i / rate` and goes out on connection `i % connections` (keep-alive, one
request in flight per connection) as soon as it is due and that connection's previous answer is in; its
latency counts from when it was due, so a slow answer delays the requests queued behind it and they count
it too (no coordinated omission). The client runs on uvloop with a protocol of its own rather than
asyncio's streams: the benchmark measures the server, and every microsecond the client spends is taken
from the same two cores. Its CPU is reported beside the latencies.

Used by the benchmarks through `open_loop(port, requests, rate, seconds)`; run directly as
`python tests/benchmarks/open_loop_client.py PORT RATE CONNECTIONS REQUESTS_FILE OUT_FILE`, where
REQUESTS_FILE holds the raw requests, each preceded by its length (4 bytes, little-endian), and OUT_FILE
receives the latencies in milliseconds as doubles, in order of the requests, then the seconds the client's
thread ran on a CPU and waited for one (/proc schedstat), then the count of answers with a status of 400 or
more.
"""

from __future__ import annotations

import array
import asyncio
import functools
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending requests `first`, `first + step`, ... each when it is due and the
    answer before it is in; a plain state machine on the loop's callbacks (no coroutine, future or sleep
    per request: they would cost the client more than the server's bare endpoints do)."""

    def __init__(self, run: _Run, first: int) -> None:
        self.run = run
        self.index = first  # the request in flight, or the next one to send
        self.buffer = bytearray()
        self.needed = -1  # bytes of the answer in flight, once its head is in
        self.status = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self) -> None:
        """Send the request `index` now, or when it is due."""
        run = self.run
        if self.index >= len(run.requests):
            assert self.transport is not None
            self.transport.close()
            run.finished()
            return
        delay = run.due(self.index) - time.perf_counter()
        if delay > 0:
            run.loop.call_later(delay, self._write)
        else:
            self._write()

    def _write(self) -> None:
        assert self.transport is not None
        self.transport.write(self.run.requests[self.index])

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.needed < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            self.status = int(head[9:12])
            at = head.find(b"content-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r\n", at)
                length = int(head[at + 15 : stop if stop >= 0 else len(head)])
            self.needed = end + 4 + length
        if len(self.buffer) >= self.needed:
            del self.buffer[: self.needed]
            self.needed = -1
            run = self.run
            run.latencies[self.index] = (time.perf_counter() - run.due(self.index)) * 1000
            run.errors += self.status >= 400
            self.index += run.step
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.index < len(self.run.requests) and not self.run.done.done():
            self.run.done.set_exception(ConnectionError("the server closed the connection"))


class _Run:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, requests: Sequence[bytes], rate: float, step: int
    ) -> None:
        self.loop = loop
        self.requests = requests
        self.rate = rate
        self.step = step  # connections
        self.latencies = [0.0] * len(requests)
        self.errors = 0
        self.start = 0.0
        self.open = step
        self.done: asyncio.Future[None] = loop.create_future()

    def due(self, index: int) -> float:
        return self.start + index / self.rate

    def finished(self) -> None:
        self.open -= 1
        if self.open == 0 and not self.done.done():
            self.done.set_result(None)


async def _run(
    port: int, requests: Sequence[bytes], rate: float, connections: int
) -> tuple[list[float], int]:
    loop = asyncio.get_running_loop()
    run = _Run(loop, requests, rate, connections)
    opened = []
    for k in range(connections):
        _, connection = await loop.create_connection(
            functools.partial(_Connection, run, k), "127.0.0.1", port
        )
        opened.append(connection)
    run.start = time.perf_counter() + 0.05
    for connection in opened:
        connection.send()
    await run.done
    return run.latencies, run.errors


def _read_requests(path: Path) -> list[bytes]:
    data = path.read_bytes()
    found, at = [], 0
    while at < len(data):
        (length,) = struct.unpack_from("<I", data, at)
        found.append(data[at + 4 : at + 4 + length])
        at += 4 + length
    return found


class OpenLoop(NamedTuple):
    latencies: list[float]  # ms, in order of the requests
    ran: float  # seconds the client ran on a CPU
    waited: float  # seconds it was ready to run and waited for a CPU


async def open_loop(
    port: int,
    make: Callable[[int], bytes],
    rate: float,
    seconds: float,
    connections: int = 16,
) -> OpenLoop:
    """Latencies (ms, from each request's due time) of `rate * seconds` requests `make(0..)` sent at `rate`
    per second over `connections` connections by the client process, and that process' CPU."""
    total = max(connections, int(rate * seconds))
    with tempfile.TemporaryDirectory(prefix="open-loop-") as tmp:
        requests, out = Path(tmp) / "requests", Path(tmp) / "latencies"
        with requests.open("wb") as f:
            for n in range(total):
                data = make(n)
                f.write(struct.pack("<I", len(data)) + data)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            *(str(v) for v in (port, rate, connections, requests, out)),
        )
        assert await process.wait() == 0, "the open-loop client failed"
        values = array.array("d")
        raw = out.read_bytes()
        values.frombytes(raw[:-24])
        ran, waited, errors = struct.unpack("<ddq", raw[-24:])
    assert errors == 0, f"{errors} requests failed"
    return OpenLoop(list(values), ran, waited)


def main(argv: list[str]) -> None:
    import uvloop

    port, rate, connections = int(argv[0]), float(argv[1]), int(argv[2])
    latencies, errors = uvloop.run(_run(port, _read_requests(Path(argv[3])), rate, connections))
    ran, waited, _ = (int(v) / 1e9 for v in Path("/proc/self/schedstat").read_text().split())
    Path(argv[4]).write_bytes(
        array.array("d", latencies).tobytes() + struct.pack("<ddq", ran, waited, errors)
    )


if __name__ == "__main__":
    main(sys.argv[1:])
