"""Reservation throughput through POST /v1/reservations over a bare Litestar endpoint doing one EVALSHA.

Both endpoints live in one app served by one uvicorn process; a separate load process (this file run
as a script) keeps a fixed number of keep-alive connections busy on loopback for a fixed time against
each in turn (three alternating rounds), and the ratio of the mean request rates is reported from that one run. Run with
`make bench` (or `pytest tests/benchmarks/bench_reservations.py -o python_files='bench_*.py' -s`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.e2e.stock_server import Served

CONNECTIONS = 32
SECONDS = 4.0
ROUNDS = 3
ROOT = Path(__file__).resolve().parents[2]


# ---- the served app: the real service plus one bare endpoint ---------------------------------------


def create_bench_app() -> Any:
    """The service's app with `POST /bare/evalsha` added: no auth, no decoding, one EVALSHA, a tiny reply."""
    import redis.asyncio as aioredis
    from litestar import post

    from service.app import create_app

    client = aioredis.Redis(
        connection_pool=aioredis.BlockingConnectionPool.from_url(
            os.environ["BENCH_REDIS_URL"], max_connections=64
        )
    )
    script = client.register_script("return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)")

    @post("/bare/evalsha", status_code=200)
    async def bare() -> dict[str, int]:
        return {"n": int(await script(keys=["bench:{bare}"], args=["hits"]))}

    app = create_app()
    app.register(bare)
    return app


# ---- the load process -----------------------------------------------------------------------------


async def _connection(
    host: str, port: int, path: str, headers: str, body_of: Any, stop_at: float, counts: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    n = 0
    while time.perf_counter() < stop_at:
        body = body_of(n)
        n += 1
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        counts[status] = counts.get(status, 0) + 1
    writer.close()


async def _load(base: str, path: str, key: str, tag: str, seconds: float) -> dict[str, Any]:
    host, port = base.removeprefix("http://").split(":")
    headers = f"Authorization: Bearer {key}\r\n" if key else ""
    counts: dict[int, int] = {}
    lines = [{"sku": "BENCH", "location": f"L{i}", "qty": 1} for i in range(3)]

    def body_for(conn: int) -> Any:
        def body_of(n: int) -> bytes:
            return json.dumps(
                {
                    "order_id": f"o{conn}-{n}",
                    "channel": "web",
                    "idempotency_key": f"{tag}-{conn}-{n}",
                    "lines": [lines[n % 3]],
                    "ttl_seconds": 3600,
                }
            ).encode()

        return body_of

    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(
        *(
            _connection(host, int(port), path, headers, body_for(c), stop_at, counts)
            for c in range(CONNECTIONS)
        )
    )
    elapsed = time.perf_counter() - started
    return {"rps": sum(counts.values()) / elapsed, "statuses": counts}


def run_load(base: str, path: str, key: str, tag: str, seconds: float = SECONDS) -> dict[str, Any]:
    """Drive the load from a separate process so that the server has its core to itself."""
    done = subprocess.run(
        [sys.executable, __file__, base, path, key, tag, str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
        cwd=ROOT,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# ---- the measurement ------------------------------------------------------------------------------


@pytest.mark.benchmark
@pytest.mark.parametrize("backend", ["redis", "sql"])
def test_reservation_endpoint_throughput_over_bare_evalsha(
    backend: str, tmp_path: Path, redis_server_url: str
) -> None:
    import httpx
    import redis

    redis.Redis.from_url(redis_server_url).flushdb()
    env = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bench.db'}",
        "STOCK_BACKEND": backend,
        "BENCH_REDIS_URL": redis_server_url,
    }
    if backend == "redis":
        env["REDIS_URL"] = redis_server_url
    with bench_server(env, tmp_path) as server:
        rows = [{"sku": "BENCH", "location": f"L{i}", "sellable": 100_000_000} for i in range(3)]
        assert (
            httpx.put(f"{server.base}/v1/stock", json=rows, headers=server.headers, timeout=10).status_code
            == 200
        )
        key = server.headers["Authorization"].removeprefix("Bearer ")
        run_load(server.base, "/bare/evalsha", "", "warm", 1.0)
        run_load(server.base, "/v1/reservations", key, "warm", 1.0)
        # Alternate the two endpoints so that a change in the machine's load hits both alike.
        bare, ours = [], []
        for round_ in range(ROUNDS):
            bare.append(run_load(server.base, "/bare/evalsha", "", f"bare{round_}"))
            ours.append(run_load(server.base, "/v1/reservations", key, f"run{round_}"))
    assert all(set(b["statuses"]) == {"200"} for b in bare)
    assert all(set(o["statuses"]) == {"201"} for o in ours)
    bare_rps = sum(b["rps"] for b in bare) / ROUNDS
    ours_rps = sum(o["rps"] for o in ours) / ROUNDS
    print(
        f"\nreservations ({backend} backend): {ours_rps:.0f} req/s; bare EVALSHA endpoint: {bare_rps:.0f} req/s; "
        f"ratio {ours_rps / bare_rps:.2f} (rounds: "
        + ", ".join(f"{o['rps'] / b['rps']:.2f}" for o, b in zip(ours, bare, strict=True))
        + f"; {CONNECTIONS} connections, {ROUNDS} x {SECONDS:.0f} s each, 1 worker)"
    )


@contextmanager
def bench_server(env: dict[str, str], tmp_path: Path) -> Iterator[Served]:
    """uvicorn serving `create_bench_app` with one worker on a free loopback port."""
    import httpx

    from tests.e2e.stock_server import Served, _migrate_and_key
    from tests.services import free_port

    key = asyncio.run(_migrate_and_key(env["DATABASE_URL"], reset_postgres=False))
    port = free_port()
    log = open(tmp_path / "bench-server.log", "wb")  # noqa: SIM115 (closed in finally)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.benchmarks.bench_reservations:create_bench_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env={**os.environ, **env, "AUTO_MIGRATE": "0", "RETAIL_POLICY_VAR": str(tmp_path / "var")},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "bench-server.log").read_text())
            time.sleep(0.1)
        yield Served(base, {"Authorization": f"Bearer {key}"}, env)
    finally:
        process.terminate()
        process.wait(20)
        log.close()


if __name__ == "__main__":
    base_url, route, api_key, run_tag, duration = sys.argv[1:6]
    print(json.dumps(asyncio.run(_load(base_url, route, api_key, run_tag, float(duration)))))
