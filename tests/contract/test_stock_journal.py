"""Redis backend: when the journal cannot be written, the request fails and Redis is left as it was."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.stock.redis import RedisStockStore
from service.stock.store import (
    Levels,
    ReservationLine,
    ReservationRequest,
    SnapshotRow,
    StockEvent,
    StockUnavailable,
)
from tests.contract.stock_backends import FakeClock, open_backend


@pytest.fixture
async def redis_stock(request: pytest.FixtureRequest) -> AsyncIterator[RedisStockStore]:
    async with open_backend("redis", request, FakeClock()) as store:
        assert isinstance(store, RedisStockStore)
        await store.put_snapshot([SnapshotRow("SKU1", "S1", 5)])
        yield store


async def journal_offline(store: RedisStockStore, offline: bool) -> None:
    names = ("stock_journal", "stock_journal_off") if offline else ("stock_journal_off", "stock_journal")
    async with store.journal.engine.begin() as conn:
        await conn.exec_driver_sql(f"ALTER TABLE {names[0]} RENAME TO {names[1]}")


def ask(key: str, qty: int = 2) -> ReservationRequest:
    return ReservationRequest("o1", "web", key, (ReservationLine("SKU1", "S1", qty),), 600)


async def level(store: RedisStockStore) -> Levels:
    """SKU1's levels at S1, checking that availability (read from the store's summary, not the buckets)
    says the same."""
    found = (await store.get_levels(["SKU1"]))["SKU1"]["S1"]
    assert await store.get_available(["SKU1"]) == {"SKU1": {"S1": found.available}}
    return found


async def test_reservation_is_taken_back_when_its_journal_entry_fails(redis_stock: RedisStockStore) -> None:
    await journal_offline(redis_stock, True)
    with pytest.raises(StockUnavailable):
        await redis_stock.reserve(ask("k1"))
    assert await level(redis_stock) == Levels(sellable=5)
    await journal_offline(redis_stock, False)
    retried = await redis_stock.reserve(ask("k1"))
    assert retried.granted and not retried.replayed


async def test_event_is_undone_when_its_journal_entry_fails(redis_stock: RedisStockStore) -> None:
    sale = StockEvent("pos-1", "sale", "SKU1", "S1", 2)
    await journal_offline(redis_stock, True)
    with pytest.raises(StockUnavailable):
        await redis_stock.apply_events([sale])
    assert await level(redis_stock) == Levels(sellable=5)
    await journal_offline(redis_stock, False)
    [again] = await redis_stock.apply_events([sale])
    assert again.status == "applied"


async def test_commit_is_undone_when_its_journal_entry_fails(redis_stock: RedisStockStore) -> None:
    held = (await redis_stock.reserve(ask("k1"))).reservation
    assert held is not None
    await journal_offline(redis_stock, True)
    with pytest.raises(StockUnavailable):
        await redis_stock.commit(held.id)
    assert await level(redis_stock) == Levels(sellable=5, reserved=2)
    found = await redis_stock.get_reservation(held.id)
    assert found is not None and found.status == "held"
    await journal_offline(redis_stock, False)
    assert (await redis_stock.commit(held.id)).status == "committed"
    assert await level(redis_stock) == Levels(sellable=3, reserved=0)


async def test_release_is_undone_when_its_journal_entry_fails(redis_stock: RedisStockStore) -> None:
    held = (await redis_stock.reserve(ask("k1"))).reservation
    assert held is not None
    await journal_offline(redis_stock, True)
    with pytest.raises(StockUnavailable):
        await redis_stock.release(held.id)
    assert await level(redis_stock) == Levels(sellable=5, reserved=2)
    await journal_offline(redis_stock, False)
    assert (await redis_stock.release(held.id)).status == "released"
    assert await level(redis_stock) == Levels(sellable=5)


async def test_snapshot_is_undone_when_its_journal_entry_fails(redis_stock: RedisStockStore) -> None:
    await journal_offline(redis_stock, True)
    with pytest.raises(StockUnavailable):
        await redis_stock.put_snapshot([SnapshotRow("SKU1", "S1", 9, 1)])
    assert await level(redis_stock) == Levels(sellable=5)
    await journal_offline(redis_stock, False)
    await redis_stock.put_snapshot([SnapshotRow("SKU1", "S1", 9, 1)])
    assert await level(redis_stock) == Levels(sellable=9, damaged=1)
