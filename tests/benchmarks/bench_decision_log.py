"""The decision log at volume: sustained decisions per second with the log written to PostgreSQL (its
day-partitioned table) against the same load with the log writing nowhere, in one run (goal: at least 0.8).

Two servers of the real app (one uvicorn worker each, `tests/benchmarks/decisions_server.py`) on one
PostgreSQL database (a fresh one) and Redis stock (a database of the local Redis claimed for the run,
unless BENCH_REDIS_URL names one): one as it is, one with BENCH_DECISION_LOG=nowhere, where decisions
queue and batch as always and only the database write is left out. The load is availability decisions for 10 SKUs at the default trace level (`rules`), from 64
keep-alive connections, in alternating rounds (log on, log nowhere, ...) so that the machine's other work
falls on both alike; the ratio is that of the mean rates. "Sustained": once the rounds are over, every
decision answered by the server with the log on must be in the table, and the time it took the log to
finish writing after the last round (`drain_seconds`) is reported, with each server's CPU time per
decision. With BENCH_DATABASE=sqlite the log goes to a SQLite file instead (through the worker's SQLite
writer), the CPU per decision logged over the CPU per decision written nowhere being the log's cost there.
Run: `make bench` (or `python -m pytest tests/benchmarks/bench_decision_log.py -s
-o python_files='bench_*.py'`).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from service.db.engine import create_engine
from service.settings import DatabaseSettings
from tests.benchmarks.bench_decisions import (
    AVAILABILITY_BODY,
    _exchange,
    prepare_app,
    request_bytes,
    seed,
    server_cpu,
    start_server,
    stock_redis,
)
from tests.services import postgres_database

# where the log is written: postgresql (a fresh database) or sqlite (a file of the run's own)
DATABASE = os.environ.get("BENCH_DATABASE", "postgresql")
SECONDS = float(os.environ.get("BENCH_SECONDS", "30"))  # per server, split over the rounds
ROUNDS = 10
CONNECTIONS = 64
GOAL = 0.8


async def rounds_of(port: int, data: bytes, seconds: float) -> tuple[int, float]:
    """(decisions answered 200, seconds taken) with CONNECTIONS connections sending back to back."""
    done = errors = 0

    async def worker() -> None:
        nonlocal done, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            status = await _exchange(reader, writer, data)
            done += status == 200
            errors += status != 200
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    assert errors == 0, f"{errors} decisions failed"
    return done, time.perf_counter() - start


async def logged(database_url: str) -> int:
    engine = create_engine(DatabaseSettings(url=database_url))
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM decisions"))).scalar_one())
    finally:
        await engine.dispose()


async def measure(tmp: Path, database_url: str | None, redis_url: str) -> dict[str, Any]:
    """The rounds; `database_url` None: a SQLite file in `tmp`."""
    env, key = await prepare_app(tmp, redis_url, database_url=database_url)
    database_url = env["DATABASE_URL"]
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for name, extra in (("logged", {}), ("nowhere", {"BENCH_DECISION_LOG": "nowhere"})):
            (tmp / name).mkdir()
            servers[name] = start_server(tmp / name, {**env, **extra})
        port = servers["logged"][1]
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=120
        ) as client:
            await seed(client)
        data = request_bytes("/v1/decisions/availability", AVAILABILITY_BODY, key)
        for _, port in servers.values():
            await rounds_of(port, data, 1.0)  # warm: compiled rulesets, pools, master data cache
        before = await _settled(database_url, None)
        answered = 0
        rates: dict[str, list[float]] = {name: [] for name in servers}
        cpu: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(ROUNDS):
            for name, (process, port) in servers.items():
                cpu_before = server_cpu(process.pid)
                done, elapsed = await rounds_of(port, data, SECONDS / ROUNDS)
                rates[name].append(done / elapsed)
                cpu[name].append((server_cpu(process.pid) - cpu_before) / done * 1e6)
                if name == "logged":
                    answered += done
        finished = time.perf_counter()
        total = await _settled(database_url, before + answered)
        drain = time.perf_counter() - finished
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(30)
    assert total == before + answered, f"{before + answered - total} decisions never reached the log"
    on, off = statistics.mean(rates["logged"]), statistics.mean(rates["nowhere"])
    return {
        "decisions_per_second_logged": round(on),
        "decisions_per_second_nowhere": round(off),
        "ratio": round(on / off, 3),
        "round_rates_logged": [round(r) for r in rates["logged"]],
        "round_rates_nowhere": [round(r) for r in rates["nowhere"]],
        "server_cpu_us_per_decision_logged": round(statistics.mean(cpu["logged"])),
        "server_cpu_us_per_decision_nowhere": round(statistics.mean(cpu["nowhere"])),
        "decisions_logged": answered,
        "drain_seconds": round(drain, 2),
        "load": os.getloadavg(),
    }


async def _settled(database_url: str, expected: int | None, limit: float = 120.0) -> int:
    """The log's row count once it stops growing (or reaches `expected`), polled for at most `limit` s."""
    give_up = time.monotonic() + limit
    last = -1
    while True:
        count = await logged(database_url)
        if count == expected or (expected is None and count == last) or time.monotonic() > give_up:
            return count
        last = count
        await asyncio.sleep(0.1)


@contextmanager
def database() -> Iterator[str | None]:
    """A fresh PostgreSQL database's URL, or None for a SQLite file (BENCH_DATABASE=sqlite)."""
    if DATABASE == "sqlite":
        yield None
        return
    with postgres_database() as url:
        yield url


@pytest.mark.benchmark
def test_decisions_per_second_with_the_log_on_postgresql_against_writing_nowhere(tmp_path: Path) -> None:
    with database() as url, stock_redis() as redis_url:
        results = asyncio.run(measure(tmp_path, url, redis_url))
    print()
    for name, value in results.items():
        print(f"{name:36} {value}")
    assert results["ratio"] >= GOAL, results


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, database() as url, stock_redis() as redis_url:
        print(json.dumps(asyncio.run(measure(Path(tmp), url, redis_url)), indent=2))
