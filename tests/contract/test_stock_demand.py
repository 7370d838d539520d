"""The demand rate every backend keeps from applied sales (`store.demand`), and its Redis rebuild."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from service.domain.reorder import decay_demand_rate, update_demand_rate
from service.stock.recovery import rebuild_redis
from service.stock.redis import RedisStockStore
from service.stock.store import SnapshotRow, StockEvent, StockStateLost, StockStore, StockUnavailable
from tests.contract.stock_backends import FakeClock, open_backend
from tests.contract.test_stock_journal import journal_offline

HALF_LIFE = 7.0
PAIR = ("SKU1", "S1")


def close(actual: float, expected: float) -> bool:
    return abs(actual - expected) <= 1e-9 * abs(expected)


async def rates(stock: Any, *pairs: tuple[str, str]) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = await stock.demand.rates(list(pairs or [PAIR]))
    return found


def sale(event_id: str, qty: int, clock: FakeClock, days: float | None = None) -> StockEvent:
    at = None if days is None else clock.now + timedelta(days=days)
    return StockEvent(event_id, "sale", "SKU1", "S1", qty, at=at)


async def test_first_sale_starts_the_rate_as_update_demand_rate_says(stock: StockStore) -> None:
    await stock.apply_events([StockEvent("pos-1", "sale", "SKU1", "S1", 3)])
    assert close((await rates(stock))[PAIR], update_demand_rate(0.0, 3, 0.0, HALF_LIFE))


async def test_sale_days_later_weights_the_rate_as_update_demand_rate_says(
    stock: StockStore, clock: FakeClock
) -> None:
    await stock.apply_events([sale("pos-1", 3, clock)])
    await stock.apply_events([sale("pos-2", 5, clock, days=1.5)])
    clock.advance(1.5 * 86400)
    first = update_demand_rate(0.0, 3, 0.0, HALF_LIFE)
    assert close((await rates(stock))[PAIR], update_demand_rate(first, 5, 1.5, HALF_LIFE))


async def test_sales_milliseconds_apart_follow_the_formula(stock: StockStore, clock: FakeClock) -> None:
    await stock.apply_events([sale("pos-1", 4, clock)])
    await stock.apply_events([sale("pos-2", 2, clock, days=0.05 / 86400)])
    clock.advance(0.05)
    first = update_demand_rate(0.0, 4, 0.0, HALF_LIFE)
    assert close((await rates(stock))[PAIR], update_demand_rate(first, 2, 0.05 / 86400, HALF_LIFE))


async def test_duplicate_sale_leaves_the_rate_alone(stock: StockStore, clock: FakeClock) -> None:
    await stock.apply_events([sale("pos-1", 3, clock)])
    before = await rates(stock)
    await stock.apply_events([sale("pos-1", 3, clock, days=1.0)])
    assert await rates(stock) == before


async def test_rate_decays_when_read_later(stock: StockStore, clock: FakeClock) -> None:
    await stock.apply_events([sale("pos-1", 6, clock)])
    clock.advance(3 * 86400)
    kept = update_demand_rate(0.0, 6, 0.0, HALF_LIFE)
    assert close((await rates(stock))[PAIR], decay_demand_rate(kept, 3.0, HALF_LIFE))


async def test_sale_older_than_the_last_update_is_folded_in_without_going_back(
    stock: StockStore, clock: FakeClock
) -> None:
    await stock.apply_events([sale("pos-1", 3, clock, days=2.0)])
    await stock.apply_events([sale("pos-0", 5, clock, days=1.0)])
    clock.advance(2 * 86400)
    first = update_demand_rate(0.0, 3, 0.0, HALF_LIFE)
    assert close((await rates(stock))[PAIR], update_demand_rate(first, 5, 0.0, HALF_LIFE))


async def test_receipt_does_not_change_the_rate(stock: StockStore, clock: FakeClock) -> None:
    await stock.apply_events([sale("pos-1", 3, clock)])
    before = await rates(stock)
    await stock.apply_events([StockEvent("rcv-1", "receipt", "SKU1", "S1", 40)])
    assert await rates(stock) == before


async def test_pair_without_sales_has_no_rate(stock: StockStore) -> None:
    await stock.put_snapshot([SnapshotRow("SKU1", "S1", 10)])
    await stock.apply_events([StockEvent("rcv-1", "receipt", "SKU1", "S1", 4)])
    assert await rates(stock, PAIR, ("NOPE", "S1")) == {}


async def test_each_location_keeps_its_own_rate(stock: StockStore, clock: FakeClock) -> None:
    await stock.apply_events(
        [StockEvent("pos-1", "sale", "SKU1", "S1", 2), StockEvent("pos-2", "sale", "SKU1", "S2", 8)]
    )
    found = await rates(stock, ("SKU1", "S1"), ("SKU1", "S2"))
    assert close(found[("SKU1", "S2")], 4 * found[("SKU1", "S1")])


async def test_snapshot_keeps_the_rate(stock: StockStore, clock: FakeClock) -> None:
    await stock.apply_events([sale("pos-1", 3, clock)])
    before = await rates(stock)
    await stock.put_snapshot([SnapshotRow("SKU1", "S1", 25)])
    assert await rates(stock) == before


# ---- Redis: rebuild and journal failure ---------------------------------------------------------


@pytest.fixture
async def redis_stock(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[RedisStockStore]:
    async with open_backend("redis", request, clock) as store:
        assert isinstance(store, RedisStockStore)
        yield store


async def test_rebuild_restores_the_rates_exactly(redis_stock: RedisStockStore, clock: FakeClock) -> None:
    await redis_stock.apply_events(
        [
            sale("pos-1", 3, clock),
            sale("pos-2", 1, clock, days=0.5),
            StockEvent("pos-3", "sale", "SKU2", "D", 9),
        ]
    )
    await redis_stock.apply_events([sale("pos-4", 7, clock, days=2.25), sale("pos-5", 2, clock, days=1.0)])
    pairs = (PAIR, ("SKU2", "D"))
    before = await rates(redis_stock, *pairs)
    states = await redis_stock.demand.states(list(pairs))
    await redis_stock.wipe()
    with pytest.raises(StockStateLost):  # lost, and known to be: never read as no demand
        await rates(redis_stock, *pairs)
    await rebuild_redis(redis_stock)
    assert await redis_stock.demand.states(list(pairs)) == states
    assert await rates(redis_stock, *pairs) == before


async def test_rebuild_keeps_the_latest_rate_whatever_the_journal_order(
    redis_stock: RedisStockStore, clock: FakeClock
) -> None:
    await redis_stock.apply_events([sale("pos-1", 3, clock)])
    await redis_stock.apply_events([sale("pos-2", 4, clock, days=1.0)])
    before = await redis_stock.demand.states([PAIR])
    async with redis_stock.journal.engine.begin() as conn:
        # Concurrent requests may reach the journal in another order than Redis applied them.
        await conn.exec_driver_sql("UPDATE stock_journal SET id = 1000000 WHERE ref = 'pos-1'")
    await rebuild_redis(redis_stock)
    assert await redis_stock.demand.states([PAIR]) == before


async def test_sale_whose_journal_entry_fails_leaves_the_rate_as_it_was(
    redis_stock: RedisStockStore, clock: FakeClock
) -> None:
    await redis_stock.apply_events([sale("pos-1", 3, clock)])
    before = await redis_stock.demand.states([PAIR])
    await journal_offline(redis_stock, True)
    with pytest.raises(StockUnavailable):
        await redis_stock.apply_events([sale("pos-2", 5, clock, days=1.0), sale("pos-3", 2, clock, days=2.0)])
    assert await redis_stock.demand.states([PAIR]) == before
    await journal_offline(redis_stock, False)


async def test_first_sale_whose_journal_entry_fails_leaves_no_rate(
    redis_stock: RedisStockStore, clock: FakeClock
) -> None:
    await journal_offline(redis_stock, True)
    with pytest.raises(StockUnavailable):
        await redis_stock.apply_events([sale("pos-1", 5, clock)])
    assert await rates(redis_stock) == {}
    await journal_offline(redis_stock, False)
