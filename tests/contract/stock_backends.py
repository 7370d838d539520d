"""One fixture factory that builds every stock backend on real services, with a clock the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from service.stock.memory import MemoryStockStore
from service.stock.sql import SqlStockStore
from service.stock.store import StockStore

# "redis-cluster": the Redis store on the session's local three-primary Redis Cluster (tests/redis_cluster.py)
BACKENDS = ["memory", "sqlite", "postgresql", "redis", "redis-cluster"]


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@asynccontextmanager
async def open_backend(
    name: str, request: pytest.FixtureRequest, clock: FakeClock, redis_url: str | None = None
) -> AsyncIterator[StockStore]:
    """`redis_url`: a Redis of the test's own instead of the session's (flushed) one."""
    store: StockStore
    if name == "memory":
        store = MemoryStockStore(clock=clock)
    elif name in ("sqlite", "postgresql"):
        url = await _migrated_url(name, request)
        store = SqlStockStore(url, clock=clock)
    else:
        from service.stock.recovery import open_recovering

        if name.startswith("redis-cluster"):
            # "redis-cluster" journals into SQLite, "redis-cluster+postgresql" into PostgreSQL
            redis_url = redis_url or await flushed_cluster(request)
            journal_url = await _migrated_url(name.partition("+")[2] or "sqlite", request)
        else:
            redis_url = redis_url or await flushed_redis(request)
            # "redis" journals into SQLite, "redis+postgresql" into PostgreSQL.
            journal_url = await _migrated_url(name.partition("+")[2] or "sqlite", request)
        store = await open_recovering(redis_url, journal_url, clock=clock)
    try:
        yield store
    finally:
        await store.close()


async def _migrated_url(kind: str, request: pytest.FixtureRequest) -> str:
    from tests.conftest import migrated_database

    return await migrated_database(kind, request, "stock.db")


async def flushed_redis(request: pytest.FixtureRequest) -> str:
    """The test Redis database, emptied (the async `redis_url` fixture cannot be requested from here)."""
    import redis.asyncio as aioredis

    url: str = request.getfixturevalue("redis_server_url")
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    return url


async def flushed_cluster(request: pytest.FixtureRequest) -> str:
    """The session's local Redis Cluster (its own: every node is flushed) as a `redis+cluster://` URL."""
    import redis.asyncio as aioredis

    from tests.redis_cluster import cluster_url

    ports: list[int] = request.getfixturevalue("redis_cluster_ports")
    for port in ports:
        client = aioredis.Redis(host="127.0.0.1", port=port)
        await client.flushall()
        await client.aclose()
    return cluster_url(ports)
