"""The server the decision benchmarks load: the real app (settings from the environment) plus two bare
Litestar endpoints to compare with, served by uvicorn on the port given as the first argument. With a server name and a worker count after the
port, the two bare endpoints alone (`create_bare_app`) are served through `service.cli.run_server`, the
way `retail-policy serve` serves the service.

- POST /bare/evalsha decodes the body and runs one EVALSHA on Redis, like the smallest possible
  reservation endpoint;
- POST /bare/availability decodes an availability request and encodes an answer of the same shape.

With BENCH_DECISION_LOG=nowhere the decision log writes nowhere (tests/benchmarks/bench_decision_log.py).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import msgspec
import redis.asyncio as aioredis
import uvicorn
from litestar import Litestar, Request, post

from service.app import create_app
from service.decisions.log import SqlDecisionLog
from service.decisions.schemas import AvailabilityRequest
from service.settings import load_settings

SCRIPT = "return redis.call('HINCRBY', KEYS[1], 'n', 1)"
_redis: dict[str, Any] = {}


async def _client() -> tuple[Any, str]:
    if "client" not in _redis:
        client = aioredis.Redis.from_url(load_settings().stock.redis_url or "redis://127.0.0.1:6379/4")
        _redis["sha"] = await client.script_load(SCRIPT)
        _redis["client"] = client
    return _redis["client"], _redis["sha"]


@post("/bare/evalsha", status_code=200)
async def bare_evalsha(request: Request[Any, Any, Any]) -> dict[str, Any]:
    msgspec.json.decode(await request.body())
    client, sha = await _client()
    n = await client.evalsha(sha, 1, "bench:bare:{x}")
    return {"n": int(n)}


@post("/bare/availability", status_code=200)
async def bare_availability(request: Request[Any, Any, Any]) -> dict[str, Any]:
    body = msgspec.json.decode(await request.body(), type=AvailabilityRequest)
    return {
        "decision_id": "0" * 36,
        "kind": "availability",
        "decision": {"channel": body.channel, "skus": [{"sku": s, "sellable": 0} for s in body.skus]},
        "ruleset": {"name": "bare", "version": 0, "sha256": "0" * 64},
        "trace": None,
        "timings": {"total_ms": 0.0},
    }


async def _write_nowhere(self: SqlDecisionLog, batch: list[Any]) -> None:
    """The decision log's write, replaced by one that keeps nothing (BENCH_DECISION_LOG=nowhere): the
    decisions still queue and batch as always, only the database write is left out."""
    self.written += len(batch)


def build() -> Litestar:
    if os.environ.get("BENCH_DECISION_LOG") == "nowhere":
        SqlDecisionLog._write = _write_nowhere  # type: ignore[method-assign]
    app = create_app(load_settings())
    app.register(bare_evalsha)
    app.register(bare_availability)
    return app


def create_bare_app() -> Litestar:
    """A Litestar app of the two bare endpoints and nothing else."""
    return Litestar([bare_evalsha, bare_availability])


if __name__ == "__main__" and len(sys.argv) > 2:
    from service.cli import run_server

    run_server(
        "tests.benchmarks.decisions_server:create_bare_app",
        server=sys.argv[2],
        host="127.0.0.1",
        port=int(sys.argv[1]),
        workers=int(sys.argv[3]),
        log_level="warning",
    )
elif __name__ == "__main__":
    uvicorn.run(build(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
