"""Two checkouts of this service side by side: the decision benchmark's server started from each, and the
same endpoint against its bare counterpart measured on both in alternating pairs of rounds. A change
that moves a ratio by a few per cent is lost between two runs of `bench_decisions.py` on a machine whose
speed drifts; here both trees see the same moments.

    PYTHONPATH=. python tests/benchmarks/compare_trees.py OTHER_CHECKOUT [--pairs 10] [--seconds 2]
        [--connections 64] [--endpoint allocation|availability]

OTHER_CHECKOUT is a directory holding another version of the repository (`git worktree add DIR COMMIT`).
Each server has its own SQLite file and Redis database (two free databases claimed for the run, as the
test sessions claim theirs, on BENCH_REDIS_HOST, default 127.0.0.1:6379), seeded with the benchmark's locations and its 10 hot SKUs.
Per pair of rounds and tree: the endpoint's rate, the bare endpoint's, their ratio, CPU time per request
and the event loop thread's busy share; at the end each tree's mean ratio, ratio of mean rates and CPU
over bare, and the paired difference of the ratios with its standard deviation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from tests.benchmarks import bench_decisions as bench
from tests.services import claimed_database

REDIS_HOST = os.environ.get("BENCH_REDIS_HOST", "127.0.0.1:6379")


class Server:
    def __init__(self, root: Path, database: int) -> None:
        self.root = root
        self.redis_url = f"redis://{REDIS_HOST}/{database}"
        self.key = ""
        self.port = 0
        self.process: Any = None

    async def start(self) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="compare-"))
        self.process, self.port, self.key = await bench.start_app(tmp, self.redis_url, self.root)
        base = f"http://127.0.0.1:{self.port}"
        headers = {"Authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
            hot = [item for item in bench.items() if item["sku"].startswith("HOT-")]
            for path, rows in (("/v1/locations", bench.locations()), ("/v1/items", hot)):
                assert (await client.put(path, json=rows)).status_code == 200
            stock = [row for row in bench.stock_rows() if row["sku"].startswith("HOT-")]
            assert (await client.put("/v1/stock", json=stock)).status_code == 200

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)

    def requests(self, endpoint: str, offset: int) -> tuple[Callable[[int], bytes], Callable[[int], bytes]]:
        """(ours, bare) request builders."""
        if endpoint == "availability":
            ours = bench.request_bytes(
                "/v1/decisions/availability?trace=none", bench.AVAILABILITY_BODY, self.key
            )
            bare = bench.request_bytes("/bare/availability", bench.AVAILABILITY_BODY, self.key)
            return (lambda n: ours), (lambda n: bare)
        evalsha = bench.request_bytes("/bare/evalsha", bench.EVALSHA_BODY, self.key)
        return (lambda n: bench.allocation_request(offset + n, self.key)), (lambda n: evalsha)


async def phase(
    server: Server, make: Callable[[int], bytes], seconds: float, connections: int
) -> tuple[float, ...]:
    """(rate, server CPU µs per request, loop busy share)."""
    pid = server.process.pid
    cpu, loop = bench.server_cpu(pid), bench.loop_cpu(pid)
    started = time.perf_counter()
    rate = await bench.closed_loop(server.port, make, seconds, connections)
    wall = time.perf_counter() - started
    return rate, 1e6 * (bench.server_cpu(pid) - cpu) / (rate * seconds), (bench.loop_cpu(pid) - loop) / wall


async def compare(other: Path, pairs: int, seconds: float, connections: int, endpoint: str) -> None:
    host, _, port = REDIS_HOST.rpartition(":")
    with ExitStack() as claims:
        databases = [claims.enter_context(claimed_database(host, int(port), None)) for _ in range(2)]
        servers = {"this": Server(bench.ROOT, databases[0]), "other": Server(other, databases[1])}
        await _compare(servers, pairs, seconds, connections, endpoint)


async def _compare(
    servers: dict[str, Server], pairs: int, seconds: float, connections: int, endpoint: str
) -> None:
    try:
        for server in servers.values():
            await server.start()
            ours, bare = server.requests(endpoint, 0)
            await bench.closed_loop(server.port, ours, 1.0)  # warm both paths
            await bench.closed_loop(server.port, bare, 1.0)
        results: dict[str, list[tuple[tuple[float, ...], tuple[float, ...]]]] = {name: [] for name in servers}
        offset = 10**6
        for pair in range(pairs):
            for name in ("this", "other") if pair % 2 == 0 else ("other", "this"):
                server = servers[name]
                ours, bare = server.requests(endpoint, offset)
                offset += 10**6
                measured = (
                    await phase(server, ours, seconds, connections),
                    await phase(server, bare, seconds, connections),
                )
                results[name].append(measured)
                (rate, cpu, busy), (bare_rate, bare_cpu, _) = measured
                print(
                    f"pair {pair} {name:5}: ratio {rate / bare_rate:.3f}  {endpoint} {rate:.0f}/s {cpu:.0f} µs"
                    f" busy {busy:.3f} | bare {bare_rate:.0f}/s {bare_cpu:.0f} µs",
                    flush=True,
                )
        for name, rounds in results.items():
            ratios = [ours[0] / bare[0] for ours, bare in rounds]
            print(
                f"{name:5} {servers[name].root}: mean ratio {statistics.mean(ratios):.3f}, ratio of mean rates"
                f" {statistics.mean(o[0] for o, _ in rounds) / statistics.mean(b[0] for _, b in rounds):.3f},"
                f" CPU over bare {statistics.mean(o[1] for o, _ in rounds) / statistics.mean(b[1] for _, b in rounds):.3f},"
                f" loop busy {statistics.mean(o[2] for o, _ in rounds):.3f}"
            )
        differences = [
            this[0][0] / this[1][0] - other[0][0] / other[1][0]
            for this, other in zip(results["this"], results["other"], strict=True)
        ]
        spread = statistics.stdev(differences) if len(differences) > 1 else float("nan")
        print(f"this - other, paired: {statistics.mean(differences):+.3f} (sd {spread:.3f}, {pairs} pairs)")
    finally:
        for server in servers.values():
            server.stop()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", type=Path)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=bench.CONNECTIONS)
    parser.add_argument("--endpoint", choices=("allocation", "availability"), default="allocation")
    args = parser.parse_args(argv)
    asyncio.run(compare(args.other.resolve(), args.pairs, args.seconds, args.connections, args.endpoint))


if __name__ == "__main__":
    main(sys.argv[1:])
