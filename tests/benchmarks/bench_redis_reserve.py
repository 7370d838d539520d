"""Redis CPU per reservation of an allocation on one node: the reservations `POST /v1/decisions/allocation`
makes in the decision benchmarks (3 lines over 10 hot SKUs x 20 locations, one location per line, every
order new), taken through the stock store itself (journal in SQLite), each after a read of its SKUs'
availability as the allocation makes it, in one process and one run.

A redis-server of the benchmark's own (so that INFO counts these calls only); 16 concurrent orders,
`BENCH_ORDERS` orders per round (default 6,000), three rounds, the least kept. Reported per order: Redis
CPU (INFO CPU, user + sys), this process's CPU, and from INFO COMMANDSTATS the calls and microseconds of
each command (those a script makes included; `evalsha` is the scripts' own time, the calls inside it
included). Run: `PYTHONPATH=. python tests/benchmarks/bench_redis_reserve.py`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from service.stock.redis import RedisStockStore
from service.stock.store import ReservationLine, ReservationRequest, SnapshotRow
from tests.benchmarks.private_store import private_store, redis_cpu

ORDERS = int(os.environ.get("BENCH_ORDERS", "6000"))
CONCURRENCY = 16
ROUNDS = 3
SKUS = [f"HOT-{i}" for i in range(10)]
LOCATIONS = [f"L{j:02d}" for j in range(20)]


def order(n: int) -> ReservationRequest:
    skus = [SKUS[(n + k) % 10] for k in range(3)]
    return ReservationRequest(
        order_id=f"o-{n}",
        channel="ecommerce",
        idempotency_key=f"bench-{n}",
        lines=tuple(
            ReservationLine(sku, LOCATIONS[(n * 7 + k) % 20], 1 + k, 2 if (n * 7 + k) % 20 >= 4 else 0)
            for k, sku in enumerate(skus)
        ),
        ttl_seconds=900,
    )


async def measure_round(store: RedisStockStore, client: aioredis.Redis, start: int) -> dict[str, float]:
    numbers = iter(range(start, start + ORDERS))

    async def worker() -> None:
        for n in numbers:
            request = order(n)
            await store.get_available(list(dict.fromkeys(line.sku for line in request.lines)))
            result = await store.reserve(request)
            assert result.reservation is not None and not result.short

    await client.config_resetstat()
    cpu0, client0 = await redis_cpu(client), time.process_time()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    used, client_cpu = await redis_cpu(client) - cpu0, time.process_time() - client0
    stats = await client.info("commandstats")
    out = {"redis_cpu_us": used / ORDERS * 1e6, "client_cpu_us": client_cpu / ORDERS * 1e6}
    for name, row in sorted(stats.items()):
        command = name.removeprefix("cmdstat_")
        if command in ("info", "config|resetstat", "config"):
            continue
        out[f"{command}_calls"] = row["calls"] / ORDERS
        out[f"{command}_us"] = row["usec"] / ORDERS
    return out


async def measure() -> dict[str, Any]:
    async with private_store("rp-bench-reserve-") as (store, client):
        await store.put_snapshot([SnapshotRow(sku, loc, 500_000) for sku in SKUS for loc in LOCATIONS])
        for n in range(200):  # warm up
            await store.reserve(order(-1 - n))
        rounds = [await measure_round(store, client, r * ORDERS) for r in range(ROUNDS)]
    best = min(rounds, key=lambda r: r["redis_cpu_us"])
    return {
        "orders per round": ORDERS,
        "per order, round of least Redis CPU": {k: round(v, 2) for k, v in best.items()},
        "redis cpu per round": [round(r["redis_cpu_us"], 1) for r in rounds],
        "load average": os.getloadavg(),
    }


@pytest.mark.benchmark
def test_redis_cpu_per_allocation_reservation() -> None:
    results = asyncio.run(measure())
    print()
    print(json.dumps(results, indent=2))
    assert results["per order, round of least Redis CPU"]["redis_cpu_us"] > 0


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure()), indent=2))
