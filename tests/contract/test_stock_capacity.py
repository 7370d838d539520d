"""Daily capacity consumed by reservations: every backend counts it across orders, atomically with the
stock it takes, gives it back on release and expiry, keeps it on commit, and (Redis) rebuilds it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest

from service.stock.recovery import rebuild_redis
from service.stock.redis import RedisStockStore
from service.stock.store import (
    CapacityClaim,
    CapacityLimit,
    InvalidStockInput,
    Levels,
    ReservationLine,
    ReservationRequest,
    ShortLine,
    SnapshotRow,
    StockStateLost,
    StockStore,
    StockUnavailable,
)
from tests.contract.stock_backends import FakeClock, open_backend
from tests.contract.test_stock_contract import ask as contract_ask
from tests.contract.test_stock_journal import journal_offline

DAY = "2026-03-01"


def ask(
    key: str,
    *lines: tuple[str, str, int],
    limits: dict[str, int] | None = None,
    day: str = DAY,
    ttl: int = 600,
    partial: bool = False,
) -> ReservationRequest:
    """The contract suite's request, with a capacity claim of `limits` on `day` when given."""
    request = contract_ask(key, *lines, ttl=ttl, partial=partial)
    if limits is None:
        return request
    claim = CapacityClaim(day, tuple(CapacityLimit(loc, n) for loc, n in limits.items()))
    return msgspec.structs.replace(request, capacity=claim)


async def seed(stock: StockStore) -> None:
    await stock.put_snapshot(
        [SnapshotRow(sku, loc, 50) for sku in ("A", "B") for loc in ("DC", "S1")],
    )


async def used(stock: StockStore, *locations: str, day: str = DAY) -> dict[str, int]:
    return await stock.get_capacity_used(day, list(locations))


async def test_capacity_is_counted_across_orders_and_refuses_the_order_that_would_cross_it(
    stock: StockStore,
) -> None:
    await seed(stock)
    first = await stock.reserve(ask("o1", ("A", "DC", 6), limits={"DC": 10}))
    assert first.granted
    assert await used(stock, "DC", "S1") == {"DC": 6, "S1": 0}
    second = await stock.reserve(ask("o2", ("A", "DC", 3), ("B", "DC", 2), limits={"DC": 10}))
    # 4 units of capacity left: the first line fits, the second does not; nothing is taken
    assert not second.granted
    assert second.short == (ShortLine("B", "DC", 2, 1),)
    assert await used(stock, "DC") == {"DC": 6}
    assert (await stock.get_levels(["B"]))["B"]["DC"] == Levels(sellable=50)
    third = await stock.reserve(ask("o3", ("A", "DC", 2), ("B", "DC", 2), limits={"DC": 10}))
    assert third.granted
    assert await used(stock, "DC") == {"DC": 10}


async def test_capacity_is_per_day_and_only_at_listed_locations(stock: StockStore) -> None:
    await seed(stock)
    assert (await stock.reserve(ask("o1", ("A", "DC", 5), ("A", "S1", 7), limits={"DC": 5}))).granted
    assert await used(stock, "DC", "S1") == {"DC": 5, "S1": 0}
    assert await used(stock, "DC", day="2026-03-02") == {"DC": 0}
    # the next day starts from nothing
    assert (await stock.reserve(ask("o2", ("A", "DC", 5), limits={"DC": 5}, day="2026-03-02"))).granted
    # a reservation without a claim is neither limited nor counted
    assert (await stock.reserve(ask("o3", ("B", "DC", 9)))).granted
    assert await used(stock, "DC") == {"DC": 5}


async def test_release_and_expiry_give_capacity_back_and_commit_keeps_it(
    stock: StockStore, clock: FakeClock
) -> None:
    await seed(stock)
    released = (await stock.reserve(ask("o1", ("A", "DC", 2), limits={"DC": 10}))).reservation
    committed = (await stock.reserve(ask("o2", ("A", "DC", 3), limits={"DC": 10}))).reservation
    expiring = (await stock.reserve(ask("o3", ("B", "DC", 4), limits={"DC": 10}, ttl=30))).reservation
    assert released is not None and committed is not None and expiring is not None
    assert await used(stock, "DC") == {"DC": 9}
    await stock.release(released.id)
    assert await used(stock, "DC") == {"DC": 7}
    await stock.commit(committed.id)
    assert await used(stock, "DC") == {"DC": 7}
    clock.advance(31)
    assert await used(stock, "DC") == {"DC": 3}
    # releasing again, or after expiry, gives nothing back twice
    await stock.release(released.id)
    await stock.release(expiring.id)
    assert await used(stock, "DC") == {"DC": 3}
    assert (await stock.reserve(ask("o4", ("A", "DC", 7), limits={"DC": 10}))).granted


async def test_sweeper_expiry_gives_capacity_back(stock: StockStore, clock: FakeClock) -> None:
    await seed(stock)
    assert (await stock.reserve(ask("o1", ("A", "DC", 4), limits={"DC": 4}, ttl=10))).granted
    clock.advance(11)
    assert await stock.sweep_expired() == 1
    assert await used(stock, "DC") == {"DC": 0}


async def test_a_replay_counts_nothing_twice(stock: StockStore) -> None:
    await seed(stock)
    request = ask("o1", ("A", "DC", 4), limits={"DC": 5})
    assert (await stock.reserve(request)).granted
    again = await stock.reserve(request)
    assert again.replayed and again.granted
    assert await used(stock, "DC") == {"DC": 4}


async def test_partial_grant_takes_what_capacity_allows_in_line_order(stock: StockStore) -> None:
    await seed(stock)
    result = await stock.reserve(
        ask("o1", ("A", "DC", 4), ("B", "DC", 4), ("A", "S1", 3), limits={"DC": 6}, partial=True)
    )
    assert result.reservation is not None
    assert sorted((x.sku, x.location, x.qty) for x in result.reservation.lines) == [
        ("A", "DC", 4),
        ("A", "S1", 3),
        ("B", "DC", 2),
    ]
    assert result.short == (ShortLine("B", "DC", 4, 2),)
    assert await used(stock, "DC") == {"DC": 6}
    assert (await stock.get_levels(["B"]))["B"]["DC"] == Levels(sellable=50, reserved=2)


async def test_capacity_already_used_up_refuses_even_with_stock(stock: StockStore) -> None:
    await seed(stock)
    assert (await stock.reserve(ask("o1", ("A", "S1", 3), limits={"S1": 3}))).granted
    refused = await stock.reserve(ask("o2", ("B", "S1", 1), limits={"S1": 3}))
    assert refused.short == (ShortLine("B", "S1", 1, 0),)
    # a lower limit than what is counted (the limit was changed) leaves no room, never a negative one
    refused = await stock.reserve(ask("o3", ("B", "S1", 1), limits={"S1": 1}))
    assert refused.short == (ShortLine("B", "S1", 1, 0),)


async def test_concurrent_orders_never_cross_the_limit(stock: StockStore) -> None:
    await seed(stock)
    results = await asyncio.gather(
        *(stock.reserve(ask(f"o{i}", ("A" if i % 2 else "B", "DC", 1), limits={"DC": 7})) for i in range(20))
    )
    assert sum(r.granted for r in results) == 7
    assert await used(stock, "DC") == {"DC": 7}
    levels = await stock.get_levels(["A", "B"])
    assert levels["A"]["DC"].reserved + levels["B"]["DC"].reserved == 7


@pytest.mark.parametrize(
    ("claim", "field"),
    [
        (CapacityClaim("2026-3-1", (CapacityLimit("DC", 5),)), "capacity.day"),
        (CapacityClaim("2026-02-30", (CapacityLimit("DC", 5),)), "capacity.day"),
        (CapacityClaim(DAY, (CapacityLimit("DC", -1),)), "capacity.limits[0].limit"),
        (CapacityClaim(DAY, (CapacityLimit("DC", 5), CapacityLimit("DC", 6))), "capacity.limits[1].location"),
        (CapacityClaim(DAY, (CapacityLimit("D C", 5),)), "capacity.limits[0].location"),
    ],
)
async def test_a_bad_claim_is_refused_naming_its_field_and_takes_nothing(
    stock: StockStore, claim: CapacityClaim, field: str
) -> None:
    await seed(stock)
    request = ReservationRequest("o1", "web", "k1", (ReservationLine("A", "DC", 1),), 600, capacity=claim)
    with pytest.raises(InvalidStockInput) as raised:
        await stock.reserve(request)
    assert raised.value.field == field
    assert (await stock.get_levels(["A"]))["A"]["DC"] == Levels(sellable=50)
    with pytest.raises(InvalidStockInput):
        await stock.get_capacity_used("tomorrow", ["DC"])


# ---- Redis: journal failures and the rebuild -------------------------------------------------------


@pytest.fixture
async def redis_stock(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[RedisStockStore]:
    async with open_backend("redis", request, clock) as store:
        assert isinstance(store, RedisStockStore)
        await seed(store)
        yield store


async def test_reservation_whose_journal_entry_fails_counts_nothing(redis_stock: RedisStockStore) -> None:
    await journal_offline(redis_stock, True)
    with pytest.raises(StockUnavailable):
        await redis_stock.reserve(ask("o1", ("A", "DC", 4), limits={"DC": 5}))
    assert await used(redis_stock, "DC") == {"DC": 0}


async def test_release_whose_journal_entry_fails_stays_counted(redis_stock: RedisStockStore) -> None:
    held = (await redis_stock.reserve(ask("o1", ("A", "DC", 4), limits={"DC": 5}))).reservation
    assert held is not None
    await journal_offline(redis_stock, True)
    with pytest.raises(StockUnavailable):
        await redis_stock.release(held.id)
    assert await used(redis_stock, "DC") == {"DC": 4}
    await journal_offline(redis_stock, False)
    await redis_stock.release(held.id)
    assert await used(redis_stock, "DC") == {"DC": 0}


async def test_commit_whose_journal_entry_fails_can_still_be_released(redis_stock: RedisStockStore) -> None:
    held = (await redis_stock.reserve(ask("o1", ("A", "DC", 4), limits={"DC": 5}))).reservation
    assert held is not None
    await journal_offline(redis_stock, True)
    with pytest.raises(StockUnavailable):
        await redis_stock.commit(held.id)
    await journal_offline(redis_stock, False)
    # the undone commit left the claim held, so a release gives it back
    await redis_stock.release(held.id)
    assert await used(redis_stock, "DC") == {"DC": 0}


async def test_rebuild_restores_capacity_usage(redis_stock: RedisStockStore, clock: FakeClock) -> None:
    committed = (await redis_stock.reserve(ask("o1", ("A", "DC", 2), limits={"DC": 20}))).reservation
    released = (await redis_stock.reserve(ask("o2", ("A", "DC", 3), limits={"DC": 20}))).reservation
    assert committed is not None and released is not None
    await redis_stock.commit(committed.id)
    await redis_stock.release(released.id)
    held = await redis_stock.reserve(ask("o3", ("B", "DC", 4), ("A", "S1", 1), limits={"DC": 20, "S1": 9}))
    expiring = await redis_stock.reserve(ask("o4", ("B", "DC", 5), limits={"DC": 20}, ttl=30))
    assert held.granted and expiring.granted
    other_day = await redis_stock.reserve(ask("o5", ("B", "S1", 6), limits={"S1": 9}, day="2026-03-02"))
    assert other_day.granted
    before = (await used(redis_stock, "DC", "S1"), await used(redis_stock, "S1", day="2026-03-02"))
    assert before == ({"DC": 11, "S1": 1}, {"S1": 6})
    await redis_stock.wipe()
    with pytest.raises(StockStateLost):  # lost, and known to be: never read as zero usage
        await used(redis_stock, "DC")
    await rebuild_redis(redis_stock)
    assert (await used(redis_stock, "DC", "S1"), await used(redis_stock, "S1", day="2026-03-02")) == before
    # the rebuilt holds still expire and release as before
    clock.advance(31)
    assert await used(redis_stock, "DC") == {"DC": 6}
    assert held.reservation is not None
    await redis_stock.release(held.reservation.id)
    assert await used(redis_stock, "DC", "S1") == {"DC": 2, "S1": 0}


async def test_capacity_keys_expire_after_the_day_is_over(redis_stock: RedisStockStore) -> None:
    assert (await redis_stock.reserve(ask("o1", ("A", "DC", 2), limits={"DC": 5}))).granted
    for key in redis_stock.keys.capacity(DAY):
        ttl_ms = await redis_stock.client.pttl(key)
        # kept for the longest reservation that could still count on that day, and not forever
        assert 30 * 86_400_000 < ttl_ms <= 33 * 86_400_000
