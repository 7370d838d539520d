"""Redis backend: the state marker. Without it every stock call refuses (StockStateLost) and changes
nothing; the store rebuilds itself from the journal, one worker at a time; a reservation stays one round
trip to Redis."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from service.stock.recovery import open_recovering
from service.stock.redis import RedisStockStore, reservation_id
from service.stock.redis_layout import LAYOUT
from service.stock.store import (
    ReservationLine,
    ReservationRequest,
    SnapshotRow,
    StockEvent,
    StockStateLost,
)
from tests.contract.stock_backends import FakeClock, open_backend


@pytest.fixture
async def redis_stock(request: pytest.FixtureRequest) -> AsyncIterator[RedisStockStore]:
    async with open_backend("redis", request, FakeClock()) as store:
        assert isinstance(store, RedisStockStore)
        await store.put_snapshot([SnapshotRow("SKU1", "S1", 5)])
        yield store


def ask(key: str, qty: int = 2) -> ReservationRequest:
    return ReservationRequest("o1", "web", key, (ReservationLine("SKU1", "S1", qty),), 600)


async def everything(client: aioredis.Redis) -> dict[bytes, bytes | None]:
    """Every key of the database with its serialised value."""
    return {key: await client.dump(key) for key in sorted(await client.keys("*"))}


async def until(condition: Callable[[], Awaitable[Any]]) -> None:
    """Poll a condition until it holds (failing after 10 s)."""
    async with asyncio.timeout(10):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.01)


async def marker_back(store: RedisStockStore) -> None:
    await until(store.has_marker)


async def test_a_new_deployment_opens_with_its_marker_at_journal_position_0(
    request: pytest.FixtureRequest,
) -> None:
    async with open_backend("redis", request, FakeClock()) as store:
        assert isinstance(store, RedisStockStore)
        assert await store.client.hgetall(store.keys.built) == {
            b"journal": b"0",
            b"at": b"1772355600000",
            b"n": b"0",
            b"layout": LAYOUT.encode(),
        }
        await store.put_snapshot([SnapshotRow("SKU1", "S1", 5)])
        assert (await store.reserve(ask("k1"))).granted


async def test_every_stock_call_refuses_without_the_marker_and_changes_nothing(
    redis_stock: RedisStockStore,
) -> None:
    held = (await redis_stock.reserve(ask("k1"))).reservation
    assert held is not None
    client = redis_stock.client
    await client.set(redis_stock.keys.rebuilding, "another-worker", px=60_000)  # it waits for that one
    await client.delete(redis_stock.keys.built)
    before = await everything(client)

    calls: list[Any] = [
        redis_stock.reserve(ask("k2")),
        redis_stock.get_levels(["SKU1"]),
        redis_stock.get_available(["SKU1"]),
        redis_stock.get_capacity_used("2026-03-01", ["S1"]),
        redis_stock.put_snapshot([SnapshotRow("SKU1", "S1", 9)]),
        redis_stock.apply_events([StockEvent("e1", "receipt", "SKU1", "S1", 3)]),
        redis_stock.commit(held.id),
        redis_stock.release(held.id),
        redis_stock.get_reservation(held.id),
        redis_stock.demand.rates([("SKU1", "S1")]),
        redis_stock.sweep_expired(),
        redis_stock.ping(),
    ]
    for call in calls:
        with pytest.raises(StockStateLost):
            await call
    assert await everything(client) == before
    assert redis_stock.recovery is not None and redis_stock.recovery.state == "rebuilding"

    await client.delete(redis_stock.keys.rebuilding)  # the other worker's lock lapses without a marker
    await marker_back(redis_stock)
    assert (await redis_stock.get_levels(["SKU1"]))["SKU1"]["S1"].reserved == 2
    assert (await redis_stock.reserve(ask("k2"))).granted


async def test_two_workers_that_find_the_state_lost_rebuild_it_once(
    redis_stock: RedisStockStore, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    await redis_stock.reserve(ask("k1"))
    url: str = request.getfixturevalue("redis_server_url")
    other = await open_recovering(url, str(redis_stock.journal.engine.url), clock=FakeClock())
    try:
        caplog.set_level(logging.WARNING, "retail_policy.stock")
        await redis_stock.client.flushdb()
        # both find the state lost before either can rebuild: a third worker holds the lock meanwhile
        await redis_stock.client.set(redis_stock.keys.rebuilding, "a-third-worker", px=60_000)
        for worker in (redis_stock, other):
            with pytest.raises(StockStateLost):
                await worker.get_available(["SKU1"])
        await redis_stock.client.delete(redis_stock.keys.rebuilding)  # it stopped without a marker
        for worker in (redis_stock, other):
            await marker_back(worker)
            assert (await worker.get_levels(["SKU1"]))["SKU1"]["S1"].reserved == 2
        rebuilds = [r for r in caplog.records if r.getMessage().startswith("stock rebuilt from")]
        assert len(rebuilds) == 1
    finally:
        await other.close()


async def test_a_reservation_journaled_while_redis_lost_its_data_is_in_the_rebuild(
    redis_stock: RedisStockStore,
) -> None:
    database = redis_stock.journal.engine.url.database
    assert database is not None
    blocker = sqlite3.connect(database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the journal cannot be written until this ends
    try:
        reserving = asyncio.create_task(redis_stock.reserve(ask("late")))
        # its script has run; its journal entry waits
        await until(lambda: redis_stock.client.exists(redis_stock.keys.reservation(reservation_id("late"))))
        await redis_stock.client.flushdb()
        with pytest.raises(StockStateLost):
            await redis_stock.get_levels(["SKU1"])
        # the rebuild has begun: it holds the lock
        await until(lambda: redis_stock.client.exists(redis_stock.keys.rebuilding))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await reserving).granted
    await marker_back(redis_stock)
    assert (await redis_stock.get_levels(["SKU1"]))["SKU1"]["S1"].reserved == 2
    assert (await redis_stock.get_reservation(reservation_id("late"))) is not None


async def test_state_of_an_older_key_layout_is_rebuilt_before_a_script_reads_it(
    redis_stock: RedisStockStore, request: pytest.FixtureRequest
) -> None:
    await redis_stock.reserve(ask("k1"))
    client = redis_stock.client
    # what an older version leaves: no availability summary, a marker without a layout
    await client.delete(redis_stock.keys.avail("SKU1"))
    await client.hdel(redis_stock.keys.built, "layout")
    url: str = request.getfixturevalue("redis_server_url")
    other = await open_recovering(url, str(redis_stock.journal.engine.url), clock=FakeClock())
    try:
        assert await client.hget(redis_stock.keys.built, "layout") == LAYOUT.encode()
        assert await other.get_available(["SKU1"]) == {"SKU1": {"S1": 3}}
        assert await client.hgetall(redis_stock.keys.avail("SKU1")) == {b"S1": b"3"}
    finally:
        await other.close()


async def test_a_single_sku_reservation_is_one_round_trip_to_redis(
    private_redis: str, request: pytest.FixtureRequest
) -> None:
    async with open_backend("redis", request, FakeClock(), redis_url=private_redis) as store:
        await store.put_snapshot([SnapshotRow("SKU1", "S1", 5)])
        await store.reserve(ask("warm-up", 1))  # the script is cached and the connection open
        watcher, marker = redis.Redis.from_url(private_redis), redis.Redis.from_url(private_redis)
        marker.ping()  # its connection is open before watching
        with watcher.monitor() as monitor:
            sent = asyncio.create_task(store.reserve(ask("k1")))
            assert (await sent).granted
            marker.echo("done")
            commands = []
            for (
                seen
            ) in monitor.listen():  # every command Redis ran, in order, each client's and each script's
                if seen["command"] == "ECHO done":
                    break
                if seen["client_type"] != "lua":
                    commands.append(seen["command"].split()[0])
        watcher.close()
        marker.close()
    assert commands == ["EVALSHA"]
