"""Server CPU per decision request in-process, and where it goes: the app (as `create_app` builds it, with
Redis stock, the SQLite journal and decision log, durable_rules) is called as an ASGI app directly, with no
HTTP server and no client, so what is measured is the app's own path (middleware, auth, context, the
decision, encoding) plus the background work it causes (the decision log writes).

Run: `PYTHONPATH=. .venv/bin/python tests/benchmarks/profile_decisions.py [phase] [requests] [--profile]`
(phase: availability, availability_none, allocation, reservation; prints microseconds of process CPU per
request; with --profile, the top of a cProfile by cumulative time, which threads and greenlets distort:
for proportions, attach `py-spy record --gil -p <pid>` to a long run instead). The Prometheus metrics are
kept in this process's memory, not in the multiprocess files `serve` uses.

With `BENCH_DATABASE=postgresql` the journal and decision log go to a fresh PostgreSQL database of the
run's own (dropped after), and the CPU its server backends spent per request is reported beside ours (read
from their /proc stat: the server must run on this machine). Every run also reports the rate and the p50
and p99 latency of the requests in it.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg

from service.app import create_app
from service.settings import load_settings
from tests.benchmarks.bench_decisions import AVAILABILITY_BODY, items, locations, prepare_app, stock_rows
from tests.benchmarks.bench_operator import ALLOCATION_TEMPLATE, RESERVATION_TEMPLATE
from tests.services import claimed_database, database_name, postgres_database, postgres_server_url

CONCURRENCY = 16
# where the journal and decision log go: sqlite (a file) or postgresql (a fresh database)
DATABASE = os.environ.get("BENCH_DATABASE", "sqlite")
PHASES = {
    "availability": ("/v1/decisions/availability", b"", AVAILABILITY_BODY.decode()),
    "availability_none": ("/v1/decisions/availability", b"trace=none", AVAILABILITY_BODY.decode()),
    "allocation": ("/v1/decisions/allocation", b"", ALLOCATION_TEMPLATE),
    "reservation": ("/v1/reservations", b"", RESERVATION_TEMPLATE),
}


def body_of(template: str, n: int) -> bytes:
    body = template.replace("@N@", f"p-{n}")
    for k in range(3):
        body = body.replace(f"@S{k}@", str((n + k) % 10))
    return body.encode()


async def call(app: Any, path: str, query: bytes, body: bytes, key: str, method: str = "POST") -> int:
    """One request straight through the ASGI app; its status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def backends_cpu(database_url: str | None) -> float:
    """Seconds of CPU spent so far by the PostgreSQL server processes serving `database_url` (0 without)."""
    if database_url is None:
        return 0.0
    base = postgres_server_url().replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        rows = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1", database_name(database_url)
        )
    finally:
        await admin.close()
    return _cpu_of([pid for (pid,) in rows])


def _cpu_of(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:  # ended meanwhile
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


async def main(phase: str, count: int, profile: bool) -> None:
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        db = stack.enter_context(claimed_database("127.0.0.1", 6379, None))
        database_url = stack.enter_context(postgres_database()) if DATABASE == "postgresql" else None
        await measure(phase, count, profile, Path(tmp), db, database_url)


async def measure(
    phase: str, count: int, profile: bool, tmp: Path, db: int, database_url: str | None
) -> None:
    path, query, template = PHASES[phase]
    env, key = await prepare_app(tmp, f"redis://127.0.0.1:6379/{db}", database_url=database_url)
    os.environ.update(env)
    os.environ["RETAIL_POLICY_VAR"] = str(Path(tmp) / "var")
    app = create_app(load_settings())
    async with app.lifespan():  # in this loop, so the app's connections are this loop's
        rows = stock_rows()
        for put, data in [("/v1/locations", locations()), ("/v1/items", items())] + [
            ("/v1/stock", rows[i : i + 2000]) for i in range(0, len(rows), 2000)
        ]:
            assert await call(app, put, b"", json.dumps(data).encode(), key, "PUT") == 200
        for n in range(300):  # warm: compiled rulesets, scripts, pools, master data
            assert await call(app, path, query, body_of(template, n), key) in (200, 201)
        profiler = cProfile.Profile() if profile else None
        server_started = await backends_cpu(database_url)
        wall = time.perf_counter()
        started = time.process_time()
        if profiler:
            profiler.enable()
        numbers = iter(range(300, 300 + count))

        latencies: list[float] = []

        async def client() -> None:  # CONCURRENCY of these at once, as a server sees them
            for n in numbers:
                sent = time.perf_counter()
                await call(app, path, query, body_of(template, n), key)
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - wall
        await asyncio.sleep(0.2)  # the decision log's last batch
        if profiler:
            profiler.disable()
        spent = time.process_time() - started
        server = await backends_cpu(database_url) - server_started
        latencies.sort()
        report = {
            "phase": phase,
            "database": DATABASE,
            "requests": count,
            "cpu_us_per_request": round(spent / count * 1e6),
            "rate_per_s": round(count / elapsed),
            "p50_ms": round(latencies[len(latencies) // 2] * 1e3, 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1e3, 2),
        }
        if database_url is not None:
            report["pg_server_cpu_us_per_request"] = round(server / count * 1e6)
        print(json.dumps(report))
        if profiler:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(60)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(40)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    asyncio.run(
        main(
            args[0] if args else "availability",
            int(args[1]) if len(args) > 1 else 3000,
            "--profile" in sys.argv,
        )
    )
