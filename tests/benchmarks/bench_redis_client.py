"""CPU time of one stock script call: redis.asyncio's EVALSHA (blocking connection pool) against the
store's pipelined script connection (service/stock/wire.py), in one process and one run.

Both run the same one-key script on the same Redis, first one call at a time, then 16 concurrent callers;
the figure is the client process's CPU time per call (what a worker pays), and the ratio is redis.asyncio
over the script connection. Run: `make bench`, or `python tests/benchmarks/bench_redis_client.py`
(Redis at BENCH_REDIS_URL, default redis://127.0.0.1:6379/4).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from service.stock.wire import ScriptClient

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/4")
SCRIPT = "return redis.call('HINCRBY', KEYS[1], 'n', 1)"
CALLS = 6000


async def cpu_per_call(call: Callable[[], Awaitable[Any]], concurrency: int) -> float:
    async def worker(n: int) -> None:
        for _ in range(n):
            await call()

    await asyncio.gather(*(worker(100) for _ in range(concurrency)))  # warm up
    start = time.process_time()
    await asyncio.gather(*(worker(CALLS // concurrency) for _ in range(concurrency)))
    return (time.process_time() - start) / CALLS * 1e6


async def measure() -> dict[str, Any]:
    sha = hashlib.sha1(SCRIPT.encode()).hexdigest()
    pooled = aioredis.Redis(
        connection_pool=aioredis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=64)
    )
    await pooled.script_load(SCRIPT)
    pipelined = ScriptClient(REDIS_URL)
    results: dict[str, Any] = {}
    try:
        for concurrency in (1, 16):
            rounds: list[tuple[float, float]] = []
            for _ in range(3):  # alternating, so both see the machine alike
                a = await cpu_per_call(lambda: pooled.evalsha(sha, 1, "bench:{wire}"), concurrency)
                b = await cpu_per_call(
                    lambda: pipelined.evalsha(sha, SCRIPT, ["bench:{wire}"], []), concurrency
                )
                rounds.append((a, b))
            pool_us = min(a for a, _ in rounds)
            wire_us = min(b for _, b in rounds)
            results[f"concurrency_{concurrency}"] = {
                "redis_asyncio_us_per_call": round(pool_us, 1),
                "script_connection_us_per_call": round(wire_us, 1),
                "ratio": round(pool_us / wire_us, 2),
            }
    finally:
        await pooled.aclose()
        await pipelined.close()
    return results


@pytest.mark.benchmark
def test_script_connection_costs_less_cpu_per_call_than_redis_asyncio() -> None:
    results = asyncio.run(measure())
    print()
    print(json.dumps(results, indent=2))
    assert all(r["script_connection_us_per_call"] > 0 for r in results.values())


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure()), indent=2))
