"""The sweeper releases holds nobody touches again: checked on Redis's raw keys, which no read prunes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from service.stock.redis import RedisStockStore
from service.stock.store import ReservationLine, ReservationRequest, SnapshotRow
from service.stock.sweeper import start_sweeper
from tests.contract.stock_backends import open_backend


class WallClock:
    def __call__(self) -> datetime:
        return datetime.now(UTC)


@pytest.fixture
async def redis_stock(request: pytest.FixtureRequest) -> AsyncIterator[RedisStockStore]:
    async with open_backend("redis", request, WallClock()) as store:  # type: ignore[arg-type]
        assert isinstance(store, RedisStockStore)
        yield store


async def test_sweeper_expires_idle_holds_without_any_request(redis_stock: RedisStockStore) -> None:
    await redis_stock.put_snapshot([SnapshotRow("SKU1", "S1", 5)])
    request = ReservationRequest("o1", "web", "k1", (ReservationLine("SKU1", "S1", 2),), ttl_seconds=1)
    held = (await redis_stock.reserve(request)).reservation
    assert held is not None
    sweeper = start_sweeper(redis_stock, 0.1)
    try:
        await asyncio.sleep(1.6)
    finally:
        sweeper.cancel()
    client, keys = redis_stock.client, redis_stock.keys
    assert await client.hget(keys.reservation(held.id), "status") == b"expired"
    assert await client.hget(keys.stock("SKU1"), "r:S1") == b"0"
    assert await client.zcard(keys.holds) == 0
    assert await client.zcard(keys.hold("SKU1")) == 0
