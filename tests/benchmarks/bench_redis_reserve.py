"""Redis CPU per reservation of an allocation on one node: the reservations `POST /v1/decisions/allocation`
makes in the decision benchmarks (3 lines over 10 hot SKUs x 20 locations, one location per line, every
order new), taken through the stock store itself (journal in SQLite), each after a read of its SKUs'
availability as the allocation makes it, in one process and one run.

A redis-server of the benchmark's own (so that INFO counts these calls only); 16 concurrent orders,
`BENCH_ORDERS` orders per round (default 6,000), three rounds, the least kept. Reported per order: Redis
CPU (INFO CPU, user + sys), this process's CPU, and from INFO COMMANDSTATS the calls and microseconds of
each command (those a script makes included; `evalsha` is the scripts' own time, the calls inside it
included). Run: `PYTHONPATH=. python tests/benchmarks/bench_redis_reserve.py`.

With `BENCH_REPLAY=1` the reserve script alone: the same orders' EVALSHAs built beforehand and sent over a
plain socket in batches of 32, one after the other (so that Redis runs on a core of its own while the
client barely works), the script's microseconds per call from COMMANDSTATS; `BENCH_ONE_LINE=1` makes each
order one line (the reservation benchmark's shape). The steadiest figure for a change of the scripts.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from typing import Any

import hiredis
import pytest
import redis.asyncio as aioredis

import service.stock.ledger as ledger
from service.stock.redis import RedisStockStore, reservation_id
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


def one_line(n: int) -> ReservationRequest:
    line = ReservationLine(SKUS[n % 10], LOCATIONS[5], 1)
    return ReservationRequest(f"r-{n}", "ecommerce", f"res-{n}", (line,), ttl_seconds=3600)


def reserve_command(store: RedisStockStore, request: ReservationRequest, now_ms: int) -> bytes:
    """The reserve script's EVALSHA for the request as the store sends it on one node (no capacity claim)."""
    rid = reservation_id(request.idempotency_key)
    keys = [store.keys.reservation(rid), store.keys.holds_at("")]
    args: list[Any] = [rid, now_ms, now_ms + request.ttl_seconds * 1000, ledger.request_fingerprint(request)]
    args += [0, request.order_id, request.channel, request.idempotency_key, 0]
    by_sku: dict[str, list[ReservationLine]] = {}
    for line in ledger.merge_lines(request.lines):
        by_sku.setdefault(line.sku, []).append(line)
    for sku, lines in by_sku.items():
        keys += store.keys.sku_keys(sku)
        args += [sku, len(lines)]
        for line in lines:
            args += [line.location, line.qty, line.floor]
    keys.append(store.keys.built_at(""))
    script = store._reserve
    return bytes(hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args)))


def replay(port: int, commands: list[bytes], batch: int = 32) -> None:
    with socket.create_connection(("127.0.0.1", port)) as connection:
        reader = hiredis.Reader()
        for start in range(0, len(commands), batch):
            chunk = commands[start : start + batch]
            connection.sendall(b"".join(chunk))
            got = 0
            while got < len(chunk):
                reply = reader.gets()
                if reply is False:
                    reader.feed(connection.recv(1 << 20))
                    continue
                assert not isinstance(reply, Exception) and reply[0] == b"granted", reply
                got += 1


async def measure_replay() -> dict[str, Any]:
    make = one_line if os.environ.get("BENCH_ONE_LINE") == "1" else order
    rounds = []
    for r in range(ROUNDS):
        async with private_store("rp-bench-replay-") as (store, client):
            await store.put_snapshot([SnapshotRow(sku, loc, 5_000_000) for sku in SKUS for loc in LOCATIONS])
            await store.get_available(SKUS)  # the SKUs' ready answers, as the allocations' reads leave them
            await client.script_load(store._reserve.text)
            port = int(client.connection_pool.connection_kwargs["port"])
            now = store._now_ms()
            replay(port, [reserve_command(store, make(-1 - n), now - 1000 + n) for n in range(1000)])
            commands = [reserve_command(store, make(r * 10**6 + n), now + n) for n in range(ORDERS)]
            await client.config_resetstat()
            replay(port, commands)
            stats = await client.info("commandstats")
            rounds.append(
                {
                    "evalsha_us": stats["cmdstat_evalsha"]["usec"] / ORDERS,
                    "calls_in_script": sum(
                        row["calls"] for name, row in stats.items() if name not in IGNORED_STATS
                    )
                    / ORDERS,
                }
            )
    return {
        "orders per round": ORDERS,
        "shape": make.__name__,
        "reserve script us per call, per round": [round(row["evalsha_us"], 1) for row in rounds],
        "least": round(min(row["evalsha_us"] for row in rounds), 1),
        "redis calls in the script per call": round(rounds[0]["calls_in_script"], 2),
    }


IGNORED_STATS = ("cmdstat_evalsha", "cmdstat_info", "cmdstat_config|resetstat", "cmdstat_script|load")


@pytest.mark.benchmark
def test_redis_cpu_per_allocation_reservation() -> None:
    results = asyncio.run(measure())
    print()
    print(json.dumps(results, indent=2))
    assert results["per order, round of least Redis CPU"]["redis_cpu_us"] > 0


if __name__ == "__main__":
    run = measure_replay if os.environ.get("BENCH_REPLAY") == "1" else measure
    print(json.dumps(asyncio.run(run()), indent=2))
