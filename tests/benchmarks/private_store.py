"""A Redis stock store of a benchmark's own: a private redis-server on a free loopback port, its journal in a
SQLite file of a temporary folder, and a plain client beside it for INFO (Redis CPU, command stats)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from service.db.engine import create_engine
from service.db.migrate import upgrade
from service.settings import DatabaseSettings
from service.stock.recovery import open_recovering
from service.stock.redis import RedisStockStore


async def redis_cpu(client: aioredis.Redis) -> float:
    """Seconds of CPU the Redis server has used so far (user and system)."""
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


@asynccontextmanager
async def private_store(prefix: str) -> AsyncIterator[tuple[RedisStockStore, aioredis.Redis]]:
    """The store and a client of its server; both closed and the server stopped on the way out (skips the
    benchmark when redis-server is not installed)."""
    from tests.services import start_redis

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        process, port = start_redis(binary, folder)
        try:
            journal = f"sqlite+aiosqlite:///{Path(folder) / 'journal.db'}"
            engine = create_engine(DatabaseSettings(url=journal))
            await upgrade(engine)
            await engine.dispose()
            url = f"redis://127.0.0.1:{port}/0"
            store = await open_recovering(url, journal)
            client = aioredis.Redis.from_url(url)
            try:
                yield store, client
            finally:
                await client.aclose()
                await store.close()
        finally:
            process.terminate()
            process.wait(10)
