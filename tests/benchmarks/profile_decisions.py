"""Server CPU per decision request in-process, and where it goes: the app (as `create_app` builds it, with
Redis stock, the SQLite journal and decision log, durable_rules) is called as an ASGI app directly, with no
HTTP server and no client, so what is measured is the app's own path (middleware, auth, context, the
decision, encoding) plus the background work it causes (the decision log writes).

Run: `PYTHONPATH=. .venv/bin/python tests/benchmarks/profile_decisions.py [phase] [requests] [--profile]`
(phase: availability, availability_none, allocation, reservation; prints microseconds of process CPU per
request; with --profile, the top of a cProfile by cumulative time, which threads and greenlets distort:
for proportions, attach `py-spy record --gil -p <pid>` to a long run instead). The Prometheus metrics are
kept in this process's memory, not in the multiprocess files `serve` uses.
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
from pathlib import Path
from typing import Any

from service.app import create_app
from service.settings import load_settings
from tests.benchmarks.bench_decisions import AVAILABILITY_BODY, items, locations, prepare_app, stock_rows
from tests.benchmarks.bench_operator import ALLOCATION_TEMPLATE, RESERVATION_TEMPLATE
from tests.services import claimed_database

CONCURRENCY = 16
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


async def main(phase: str, count: int, profile: bool) -> None:
    path, query, template = PHASES[phase]
    with tempfile.TemporaryDirectory() as tmp, claimed_database("127.0.0.1", 6379, None) as db:
        env, key = await prepare_app(Path(tmp), f"redis://127.0.0.1:6379/{db}")
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
            started = time.process_time()
            if profiler:
                profiler.enable()
            numbers = iter(range(300, 300 + count))

            async def client() -> None:  # CONCURRENCY of these at once, as a server sees them
                for n in numbers:
                    await call(app, path, query, body_of(template, n), key)

            await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
            await asyncio.sleep(0.2)  # the decision log's last batch
            if profiler:
                profiler.disable()
            spent = time.process_time() - started
            print(
                json.dumps(
                    {"phase": phase, "requests": count, "cpu_us_per_request": round(spent / count * 1e6)}
                )
            )
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
