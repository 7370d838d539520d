"""One fixture factory that builds every stock backend on real services, with a clock the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from service.stock.memory import MemoryStockStore
from service.stock.sql import SqlStockStore
from service.stock.store import StockStore

BACKENDS = ["memory", "sqlite", "postgresql", "redis"]


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@asynccontextmanager
async def open_backend(
    name: str, request: pytest.FixtureRequest, clock: FakeClock
) -> AsyncIterator[StockStore]:
    store: StockStore
    if name == "memory":
        store = MemoryStockStore(clock=clock)
    elif name in ("sqlite", "postgresql"):
        url = await _migrated_url(name, request)
        store = SqlStockStore(url, clock=clock)
    else:
        from service.stock.redis import RedisStockStore

        redis_url = await flushed_redis(request)
        journal_url = await _migrated_url("sqlite", request)
        store = await RedisStockStore.open(redis_url, journal_url, clock=clock)
    try:
        yield store
    finally:
        await store.close()


async def _migrated_url(kind: str, request: pytest.FixtureRequest) -> str:
    from service.db.engine import create_engine
    from service.db.migrate import upgrade
    from service.settings import DatabaseSettings
    from tests.conftest import _reset_postgres

    if kind == "sqlite":
        tmp_path = request.getfixturevalue("tmp_path")
        url = f"sqlite+aiosqlite:///{tmp_path / 'stock.db'}"
    else:
        url = request.getfixturevalue("postgres_server_database")
        await _reset_postgres(url)
    engine = create_engine(DatabaseSettings(url=url))
    await upgrade(engine)
    await engine.dispose()
    return url


async def flushed_redis(request: pytest.FixtureRequest) -> str:
    """The test Redis database, emptied (the async `redis_url` fixture cannot be requested from here)."""
    import redis.asyncio as aioredis

    url: str = request.getfixturevalue("redis_server_url")
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    return url
