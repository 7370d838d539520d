"""Decision endpoint throughput as ratios over bare Litestar endpoints on the same server, in one run:

- allocation with reserve (3 lines, 20 candidate locations, Redis stock) over a bare endpoint doing one
  EVALSHA (goal: at least 0.5);
- availability for 10 SKUs over a bare endpoint that decodes and encodes the same bodies (goal: 0.5);
- allocation p99 latency at half of its measured maximum rate (open loop, latency from the scheduled send);
- the reorder scan's sku-locations per second over 10,000 sku-locations in one request;
- the default trace level's cost: the rate with trace=none over the rate at the default level (`rules`),
  and the server's CPU time per request at the default level over that with trace=none, for both
  decisions at 64 connections (`trace_cost`; goal: at most 1.25).

One uvicorn worker serves the real app (SQLite decision log and journal, Redis stock on a database claimed for
the run unless BENCH_REDIS_URL names one, durable_rules engine); the load comes from a small keep-alive HTTP/1.1
client in this process. Each endpoint and its bare counterpart run in five alternating rounds (so the
machine's other work falls on both alike); a ratio is that of the mean request rates, and the server's
CPU time per request (read from /proc) is reported beside it, with Redis' (from INFO cpu: every client's,
so other users of the same Redis add to it), this load client's, and the share of the time the worker's
event loop thread was busy.

A maximum rate is measured with enough requests in flight to keep the worker busy: 64 connections. A
decision waits on Redis twice and on the journal's commit, so 16 connections leave its worker idle part of
the time while the bare endpoints, which wait on less, keep it busy; the ratios at 16 connections are
reported beside the goal figures (`at_16_connections`). Run: `make bench` (or `python -m pytest
tests/benchmarks/bench_decisions.py -s -o python_files='bench_*.py'`).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.db.engine import create_engine, session_factory
from service.db.migrate import upgrade
from service.security.keys import create_key
from service.settings import DatabaseSettings
from tests.benchmarks.open_loop_client import open_loop
from tests.services import free_port, redis_server

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("BENCH_REDIS_URL")  # default: a Redis database claimed for the run
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))  # per endpoint, split over the rounds
ROUNDS = 5
CONNECTIONS = 64  # requests in flight while a maximum rate is measured
FEW_CONNECTIONS = 16  # the same rounds again with fewer in flight (reported beside), and the latency run
LOCATIONS = 20
SCAN_SKUS = 500  # x 20 locations = 10,000 sku-locations


def locations() -> list[dict[str, Any]]:
    out = []
    for i in range(LOCATIONS):
        kind = "dc" if i < 4 else "store"
        out.append(
            {
                "id": f"L{i:02d}",
                "type": kind,
                "region": "north" if i % 2 else "south",
                "lat": 50.5 + (i % 5) * 0.8,
                "lon": -3.5 + (i // 5) * 0.9,
                "capabilities": ["ship_from_store", "pickup"] if kind == "store" else [],
                "priority": 1 if kind == "dc" else 2,
            }
        )
    return out


def items() -> list[dict[str, Any]]:
    hot = [
        {
            "sku": f"HOT-{i}",
            "category": "apparel",
            "price": 20.0,
            "cost": 8.0,
            "case_pack": 6,
            "lead_time_days": 5,
        }
        for i in range(10)
    ]
    scan = [
        {
            "sku": f"SCAN-{i:04d}",
            "category": "grocery",
            "price": 3.0,
            "cost": 1.0,
            "case_pack": 12,
            "lead_time_days": 3,
        }
        for i in range(SCAN_SKUS)
    ]
    return hot + scan


def stock_rows() -> list[dict[str, Any]]:
    rows = [
        {"sku": f"HOT-{i}", "location": f"L{j:02d}", "sellable": 50_000}
        for i in range(10)
        for j in range(LOCATIONS)
    ]
    rows += [
        {"sku": f"SCAN-{i:04d}", "location": f"L{j:02d}", "sellable": (i * 7 + j * 13) % 60}
        for i in range(SCAN_SKUS)
        for j in range(LOCATIONS)
    ]
    return rows


def request_bytes(path: str, body: bytes, key: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> int:
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def closed_loop(
    port: int, make: Callable[[int], bytes], seconds: float, connections: int = CONNECTIONS
) -> float:
    """Requests per second with `connections` connections each sending back to back."""
    counter = iter(range(10**9))
    done = 0
    errors = 0

    async def worker() -> None:
        nonlocal done, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            status = await _exchange(reader, writer, make(next(counter)))
            done += 1
            errors += status != 200
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    assert errors == 0, f"{errors} requests failed"
    return done / elapsed


def start_server(tmp: Path, env: dict[str, str], root: Path = ROOT) -> tuple[subprocess.Popen[bytes], int]:
    """The benchmark server of the checkout at `root`, on a free port, once it answers."""
    port = free_port()
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 (the process owns it until the end)
    process = subprocess.Popen(
        [sys.executable, str(root / "tests" / "benchmarks" / "decisions_server.py"), str(port)],
        env={**os.environ, **env, "PYTHONPATH": str(root)},
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError((tmp / "server.log").read_text())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200:
                return process, port
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start:\n" + (tmp / "server.log").read_text())
        time.sleep(0.2)


async def prepare_app(
    tmp: Path, redis_url: str, root: Path = ROOT, database_url: str | None = None
) -> tuple[dict[str, str], str]:
    """A fresh SQLite database in `tmp` (or the empty database at `database_url`) and an emptied Redis
    database, and an API key: the server's environment and the key."""
    redis.Redis.from_url(redis_url).flushdb()
    database_url = database_url or f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    engine = create_engine(DatabaseSettings(url=database_url))
    await upgrade(engine)
    key = await create_key(session_factory(engine), "bench", ["decide", "stock"])
    await engine.dispose()
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "STOCK_BACKEND": "redis",
        "RULES_ENGINE": "durable",
        "RULESETS_DIR": str(root / "rulesets"),
        "AUTO_MIGRATE": "0",
    }
    return env, key


async def start_app(tmp: Path, redis_url: str, root: Path = ROOT) -> tuple[subprocess.Popen[bytes], int, str]:
    """`prepare_app`, and the server of the checkout at `root` on it: (process, port, key)."""
    env, key = await prepare_app(tmp, redis_url, root)
    process, port = start_server(tmp, env, root)
    return process, port, key


async def seed(client: httpx.AsyncClient) -> None:
    """The benchmark's locations, items and stock, through the API (`client` has the base and the key)."""
    for path, rows in (("/v1/locations", locations()), ("/v1/items", items())):
        assert (await client.put(path, json=rows)).status_code == 200
    rows = stock_rows()
    for i in range(0, len(rows), 2000):
        response = await client.put("/v1/stock", json=rows[i : i + 2000])
        assert response.status_code == 200, response.text


def allocation_request(n: int, key: str, query: str = "?trace=none") -> bytes:
    """The n-th allocation of the benchmark: a new order of 3 lines over the hot SKUs, reserved."""
    return request_bytes("/v1/decisions/allocation" + query, json.dumps(allocation_body(n)).encode(), key)


def allocation_body(n: int) -> dict[str, Any]:
    return {
        "order_id": f"o-{n}",
        "channel": "ecommerce",
        "fulfillment": "ship",
        "destination": {"lat": 51.5 + (n % 7) * 0.3, "lon": -1.0 - (n % 5) * 0.4, "region": "south"},
        "lines": [{"sku": f"HOT-{(n + k) % 10}", "qty": 1 + k} for k in range(3)],
        "reserve": True,
        "idempotency_key": f"bench-{n}",
    }


EVALSHA_BODY = json.dumps({"order_id": "o", "lines": [{"sku": "HOT-1", "qty": 1}]}).encode()
AVAILABILITY_BODY = json.dumps({"channel": "ecommerce", "skus": [f"HOT-{i}" for i in range(10)]}).encode()


@contextmanager
def stock_redis() -> Iterator[str]:
    """BENCH_REDIS_URL, or a database of the local Redis claimed for this run (tests/services.py): the
    benchmark empties it first, so it must hold nothing of anyone else's."""
    if REDIS_URL:
        yield REDIS_URL
        return
    with redis_server() as (url, _):
        yield url


async def measure(tmp: Path, redis_url: str) -> dict[str, Any]:
    process, port, key = await start_app(tmp, redis_url)
    try:
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
            await seed(client)

            def allocation(n: int) -> bytes:
                return allocation_request(n, key)

            evalsha = request_bytes("/bare/evalsha", EVALSHA_BODY, key)
            bare_avail = request_bytes("/bare/availability", AVAILABILITY_BODY, key)
            real_avail = request_bytes("/v1/decisions/availability?trace=none", AVAILABILITY_BODY, key)
            # the default trace level (`rules`), at 64 connections only
            traced_avail = request_bytes("/v1/decisions/availability", AVAILABILITY_BODY, key)
            # warm both paths (compiled rulesets, scripts, pools, master data cache)
            await closed_loop(port, allocation, 1.0)
            await closed_loop(port, lambda n: real_avail, 1.0)
            await closed_loop(port, lambda n: evalsha, 1.0)
            await closed_loop(port, lambda n: bare_avail, 1.0)
            # Alternating rounds, so that every phase sees the machine's other work alike; each phase
            # records its request rate, the server's CPU time per request (from /proc) and the share of the
            # time its event loop thread was busy. A name ending in @16 is a phase at FEW_CONNECTIONS.
            phases: dict[str, list[tuple[float, float]]] = {}
            # Redis' and this load client's CPU time per request beside the server's: on a shared machine
            # the rates follow the sum of the three, not the server's alone
            others: dict[str, list[tuple[float, float]]] = {}
            busy: dict[str, list[float]] = {}
            stats = redis.Redis.from_url(redis_url)
            offset = 10**6
            for connections, suffix in ((CONNECTIONS, ""), (FEW_CONNECTIONS, "@16")):
                for round_number in range(ROUNDS):
                    allocations: list[tuple[str, Any]] = [
                        ("allocation", lambda n, o=offset: allocation(o + n)),
                        (
                            "allocation_traced",
                            lambda n, o=offset: allocation_request(o + 5 * 10**5 + n, key, ""),
                        ),
                    ]
                    availabilities: list[tuple[str, Any]] = [
                        ("availability", lambda n: real_avail),
                        ("availability_traced", lambda n: traced_avail),
                    ]
                    # a decision at both trace levels back to back, which first taking turns: a phase pays
                    # for the log writes and checkpoints the phase before it left, and an availability
                    # phase after an allocation phase paid for the allocation's (trace cost 1.2-1.3 then,
                    # about 1.0 in-process: profile_decisions.py)
                    if round_number % 2:
                        allocations.reverse()
                        availabilities.reverse()
                    for name, make in (
                        ("bare_evalsha", lambda n: evalsha),
                        *allocations,
                        ("bare_availability", lambda n: bare_avail),
                        *availabilities,
                    ):
                        if suffix and name.endswith("_traced"):
                            continue
                        before, loop_before = server_cpu(process.pid), loop_cpu(process.pid)
                        redis_before, client_before = redis_cpu(stats), time.process_time()
                        started = time.perf_counter()
                        rps = await closed_loop(port, make, SECONDS / ROUNDS, connections)
                        wall = time.perf_counter() - started
                        cpu = server_cpu(process.pid) - before
                        requests = rps * SECONDS / ROUNDS
                        phases.setdefault(name + suffix, []).append((rps, cpu / requests))
                        busy.setdefault(name + suffix, []).append(
                            (loop_cpu(process.pid) - loop_before) / wall
                        )
                        others.setdefault(name + suffix, []).append(
                            (
                                (redis_cpu(stats) - redis_before) / requests,
                                (time.process_time() - client_before) / requests,
                            )
                        )
                    offset += 10**6
            stats.close()
            allocation_rps = mean_rate(phases["allocation"])
            latencies = (
                await open_loop(port, lambda n: allocation(10**8 + n), allocation_rps / 2, SECONDS)
            ).latencies
            scan_start = time.perf_counter()
            scan = await client.post(
                "/v1/decisions/reorder/scan?trace=none",
                json={"categories": ["grocery"], "default_daily_rate": 1.5},
            )
            scan_seconds = time.perf_counter() - scan_start
            assert scan.status_code == 200, scan.text
            scanned = scan.json()["decision"]["summary"]["scanned"]
    finally:
        process.terminate()
        process.wait(30)
    latencies.sort()

    def ratio(ours: str, bare: str) -> dict[str, Any]:
        return {
            "ratio": round(mean_rate(phases[ours]) / mean_rate(phases[bare]), 3),
            "loop_busy": round(statistics.mean(busy[ours]), 3),
            "bare_loop_busy": round(statistics.mean(busy[bare]), 3),
            "rounds": [round(o[0] / b[0], 3) for o, b in zip(phases[ours], phases[bare], strict=True)],
            "cpu_per_request_us": round(1e6 * statistics.mean(c for _, c in phases[ours])),
            "bare_cpu_per_request_us": round(1e6 * statistics.mean(c for _, c in phases[bare])),
            "redis_cpu_per_request_us": round(1e6 * statistics.mean(r for r, _ in others[ours])),
            "bare_redis_cpu_per_request_us": round(1e6 * statistics.mean(r for r, _ in others[bare])),
            "client_cpu_per_request_us": round(1e6 * statistics.mean(c for _, c in others[ours])),
            "bare_client_cpu_per_request_us": round(1e6 * statistics.mean(c for _, c in others[bare])),
        }

    return {
        "bare_evalsha_rps": round(mean_rate(phases["bare_evalsha"])),
        "allocation_reserve_rps": round(allocation_rps),
        "allocation": ratio("allocation", "bare_evalsha"),
        "bare_availability_rps": round(mean_rate(phases["bare_availability"])),
        "availability_10_skus_rps": round(mean_rate(phases["availability"])),
        "availability": ratio("availability", "bare_availability"),
        # the same decision with trace=none over the default trace level: rate(none) / rate(rules)
        "trace_cost": {
            kind: {
                "ratio": round(mean_rate(phases[kind]) / mean_rate(phases[f"{kind}_traced"]), 3),
                "rounds": [
                    round(n[0] / t[0], 3) for n, t in zip(phases[kind], phases[f"{kind}_traced"], strict=True)
                ],
                # the server's CPU time per request at the default level over that with trace=none: less
                # disturbed than the rates when other work shares the machine
                "cpu_ratio": round(
                    statistics.mean(c for _, c in phases[f"{kind}_traced"])
                    / statistics.mean(c for _, c in phases[kind]),
                    3,
                ),
                "traced_over_bare": ratio(f"{kind}_traced", bare)["ratio"],
            }
            for kind, bare in (("allocation", "bare_evalsha"), ("availability", "bare_availability"))
        },
        "at_16_connections": {
            "allocation": ratio("allocation@16", "bare_evalsha@16"),
            "availability": ratio("availability@16", "bare_availability@16"),
        },
        "allocation_offered_rps": round(allocation_rps / 2),
        "allocation_p50_ms": round(statistics.median(latencies), 2),
        "allocation_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
        "scan_sku_locations": scanned,
        "scan_seconds": round(scan_seconds, 3),
        "scan_sku_locations_per_second": round(scanned / scan_seconds),
    }


def mean_rate(phase: list[tuple[float, float]]) -> float:
    return statistics.mean(rps for rps, _ in phase)


def redis_cpu(client: redis.Redis) -> float:
    """User plus system CPU seconds the Redis server has used so far (all its clients)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _cpu_seconds(stat: Path) -> float:
    """User plus system CPU seconds from a /proc stat file."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loop_cpu(pid: int) -> float:
    """CPU seconds the server's main thread (its event loop) has used so far."""
    return _cpu_seconds(Path(f"/proc/{pid}/task/{pid}/stat"))


def server_cpu(pid: int) -> float:
    """CPU seconds the server process has used so far."""
    return _cpu_seconds(Path(f"/proc/{pid}/stat"))


@pytest.mark.benchmark
def test_decision_endpoints_against_bare_endpoints(tmp_path: Path) -> None:
    with stock_redis() as redis_url:
        results = asyncio.run(measure(tmp_path, redis_url))
    print()
    for name, value in results.items():
        print(f"{name:32} {value}")
    assert results["scan_sku_locations"] == LOCATIONS * SCAN_SKUS


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, stock_redis() as redis_url:
        print(json.dumps(asyncio.run(measure(Path(tmp), redis_url)), indent=2))
