"""The sweeper releases holds nobody touches again: checked on Redis's raw keys, which no read prunes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.stock.redis import RedisStockStore
from service.stock.store import ReservationLine, ReservationRequest, SnapshotRow
from service.stock.sweeper import start_sweeper
from tests.contract.stock_backends import FakeClock, open_backend


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def redis_stock(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[RedisStockStore]:
    async with open_backend("redis", request, clock) as store:
        assert isinstance(store, RedisStockStore)
        yield store


async def status_of(store: RedisStockStore, reservation_id: str) -> bytes | None:
    status: bytes | None = await store.client.hget(store.keys.reservation(reservation_id), "status")
    return status


async def test_sweeper_expires_idle_holds_without_any_request(
    redis_stock: RedisStockStore, clock: FakeClock
) -> None:
    await redis_stock.put_snapshot([SnapshotRow("SKU1", "S1", 5)])
    request = ReservationRequest("o1", "web", "k1", (ReservationLine("SKU1", "S1", 2),), ttl_seconds=60)
    held = (await redis_stock.reserve(request)).reservation
    assert held is not None
    sweeper = start_sweeper(redis_stock, 0.01)
    try:
        for _ in range(20):  # rounds of the sweeper before the hold is due: nothing may expire
            await asyncio.sleep(0.01)
        assert await status_of(redis_stock, held.id) == b"held"
        clock.advance(61)
        for _ in range(500):  # the sweeper's next rounds, bounded (5 s) in case it never releases
            if await status_of(redis_stock, held.id) == b"expired":
                break
            await asyncio.sleep(0.01)
    finally:
        sweeper.cancel()
    client, keys = redis_stock.client, redis_stock.keys
    assert await status_of(redis_stock, held.id) == b"expired"
    assert await client.hget(keys.stock("SKU1"), "r:S1") == b"0"
    assert await client.zcard(keys.holds) == 0
    assert await client.zcard(keys.hold("SKU1")) == 0
