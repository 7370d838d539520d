"""The StockStore contract: every backend (memory, SQLite, PostgreSQL, Redis) behaves the same."""

from __future__ import annotations

import asyncio

import pytest

from service.stock.redis import RedisStockStore
from service.stock.store import (
    IdempotencyConflict,
    InvalidStockInput,
    Levels,
    ReservationLine,
    ReservationNotFound,
    ReservationRequest,
    ReservationStateError,
    ShortLine,
    SnapshotRow,
    StockEvent,
    StockStore,
)
from tests.contract.stock_backends import FakeClock


def ask(
    key: str, *lines: tuple[str, str, int] | tuple[str, str, int, int], ttl: int = 600, partial: bool = False
):
    return ReservationRequest(
        order_id=f"order-{key}",
        channel="web",
        idempotency_key=key,
        lines=tuple(ReservationLine(*line) for line in lines),
        ttl_seconds=ttl,
        allow_partial=partial,
    )


async def level(stock: StockStore, sku: str, location: str) -> Levels:
    return (await stock.get_levels([sku]))[sku].get(location, Levels())


async def seed(stock: StockStore, sku: str = "SKU1", **per_location: int) -> None:
    await stock.put_snapshot([SnapshotRow(sku, loc, qty) for loc, qty in per_location.items()])


# ---- levels and snapshots ---------------------------------------------------------------------


async def test_snapshot_sets_every_bucket(stock: StockStore) -> None:
    await stock.put_snapshot([SnapshotRow("SKU1", "S1", 7, damaged=2, return_pending=1, in_transit=4)])
    assert await level(stock, "SKU1", "S1") == Levels(7, 0, 2, 1, 4)


async def test_unknown_sku_has_no_locations(stock: StockStore) -> None:
    assert await stock.get_levels(["NOPE"]) == {"NOPE": {}}


async def test_levels_list_every_location_of_each_sku(stock: StockStore) -> None:
    await seed(stock, S1=1, S2=2)
    await seed(stock, "SKU2", DC=5)
    levels = await stock.get_levels(["SKU1", "SKU2"])
    assert levels == {"SKU1": {"S1": Levels(1), "S2": Levels(2)}, "SKU2": {"DC": Levels(5)}}


async def test_snapshot_keeps_what_is_reserved(stock: StockStore) -> None:
    await seed(stock, S1=5)
    assert (await stock.reserve(ask("k", ("SKU1", "S1", 2)))).granted
    await seed(stock, S1=9)
    assert await level(stock, "SKU1", "S1") == Levels(sellable=9, reserved=2)


async def test_available_reads_what_a_reservation_may_still_take_at_every_location(stock: StockStore) -> None:
    await seed(stock, S1=5, S2=1)
    await stock.put_snapshot([SnapshotRow("SKU1", "S3", 0, damaged=3)])  # a row with nothing sellable
    await seed(stock, "SKU2", DC=4)
    assert (await stock.reserve(ask("k", ("SKU1", "S1", 2), ("SKU2", "DC", 4)))).granted
    # a till sale of more than is free leaves sellable below reserved: available stays at 0
    await stock.apply_events([StockEvent("e1", "sale", "SKU2", "DC", 3)])
    assert await stock.get_available(["SKU1", "SKU2", "NOPE"]) == {
        "SKU1": {"S1": 3, "S2": 1, "S3": 0},
        "SKU2": {"DC": 0},
        "NOPE": {},
    }
    levels = await stock.get_levels(["SKU1", "SKU2"])
    assert await stock.get_available(["SKU1", "SKU2"]) == {
        sku: {loc: lv.available for loc, lv in rows.items()} for sku, rows in levels.items()
    }


async def test_available_is_sellable_less_reserved_never_negative() -> None:
    assert Levels(sellable=5, reserved=2).available == 3
    assert Levels(sellable=-2, reserved=1).available == 0


# ---- events -----------------------------------------------------------------------------------


async def test_receipt_adds_sellable_and_consumes_in_transit(stock: StockStore) -> None:
    await stock.put_snapshot([SnapshotRow("SKU1", "S1", 1, in_transit=3)])
    await stock.apply_events([StockEvent("e1", "receipt", "SKU1", "S1", 5)])
    assert await level(stock, "SKU1", "S1") == Levels(sellable=6, in_transit=0)


async def test_event_sent_twice_is_applied_once(stock: StockStore) -> None:
    event = StockEvent("e1", "receipt", "SKU1", "S1", 5)
    first = await stock.apply_events([event])
    again = await stock.apply_events([event])
    assert [r.status for r in first + again] == ["applied", "duplicate"]
    assert (await level(stock, "SKU1", "S1")).sellable == 5


async def test_an_event_id_is_unique_across_skus(stock: StockStore) -> None:
    results = await stock.apply_events(
        [StockEvent("e1", "receipt", "SKU1", "S1", 5), StockEvent("e1", "receipt", "SKU2", "S1", 4)]
    )
    again = await stock.apply_events([StockEvent("e1", "receipt", "SKU3", "S2", 3)])
    assert [r.status for r in results + again] == ["applied", "duplicate", "duplicate"]
    assert await stock.get_levels(["SKU2", "SKU3"]) == {"SKU2": {}, "SKU3": {}}


async def test_sale_beyond_available_is_recorded_and_listed_as_exception(stock: StockStore) -> None:
    await seed(stock, S1=2)
    [result] = await stock.apply_events([StockEvent("pos-1", "sale", "SKU1", "S1", 3)])
    assert result.status == "applied"
    assert result.exception is not None and result.exception.shortfall == 1
    assert (await level(stock, "SKU1", "S1")).sellable == -1
    [listed] = await stock.list_exceptions()
    assert (listed.kind, listed.event_id, listed.shortfall) == ("negative_inventory", "pos-1", 1)


async def test_sale_within_available_raises_no_exception(stock: StockStore) -> None:
    await seed(stock, S1=2)
    [result] = await stock.apply_events([StockEvent("pos-1", "sale", "SKU1", "S1", 2)])
    assert result.exception is None
    assert await stock.list_exceptions() == []


async def test_return_waits_in_return_pending_until_disposition(stock: StockStore) -> None:
    await stock.apply_events(
        [
            StockEvent("r1", "return", "SKU1", "S1", 3),
            StockEvent("r2", "return_disposition", "SKU1", "S1", 2, disposition="restock"),
            StockEvent("r3", "return_disposition", "SKU1", "S1", 1, disposition="damage"),
        ]
    )
    assert await level(stock, "SKU1", "S1") == Levels(sellable=2, damaged=1, return_pending=0)


async def test_damage_moves_sellable_to_damaged(stock: StockStore) -> None:
    await seed(stock, S1=4)
    await stock.apply_events([StockEvent("d1", "damage", "SKU1", "S1", 1)])
    assert await level(stock, "SKU1", "S1") == Levels(sellable=3, damaged=1)


async def test_adjustment_sets_the_counted_sellable(stock: StockStore) -> None:
    await seed(stock, S1=10)
    await stock.apply_events([StockEvent("c1", "adjustment", "SKU1", "S1", 6)])
    assert (await level(stock, "SKU1", "S1")).sellable == 6


async def test_transfer_moves_stock_through_in_transit(stock: StockStore) -> None:
    await seed(stock, DC=10)
    await stock.apply_events([StockEvent("t1", "transfer_out", "SKU1", "DC", 4, to_location="S1")])
    assert await level(stock, "SKU1", "S1") == Levels(in_transit=4)
    await stock.apply_events([StockEvent("t2", "transfer_in", "SKU1", "S1", 4)])
    assert await level(stock, "SKU1", "DC") == Levels(sellable=6)
    assert await level(stock, "SKU1", "S1") == Levels(sellable=4, in_transit=0)


async def test_invalid_event_names_the_field_and_changes_nothing(stock: StockStore) -> None:
    with pytest.raises(InvalidStockInput) as info:
        await stock.apply_events(
            [StockEvent("ok", "receipt", "SKU1", "S1", 5), StockEvent("bad", "sale", "SKU1", "S1", 0)]
        )
    assert info.value.field == "events[1].qty"
    assert await stock.get_levels(["SKU1"]) == {"SKU1": {}}


# ---- reservations -----------------------------------------------------------------------------


async def test_reserve_holds_every_line(stock: StockStore) -> None:
    await seed(stock, S1=5, S2=5)
    result = await stock.reserve(ask("k1", ("SKU1", "S1", 2), ("SKU1", "S2", 1)))
    assert result.reservation is not None and result.reservation.status == "held"
    assert {(line.location, line.qty) for line in result.reservation.lines} == {("S1", 2), ("S2", 1)}
    assert (await level(stock, "SKU1", "S1")).available == 3
    assert (await level(stock, "SKU1", "S2")).available == 4


async def test_short_line_refuses_the_whole_reservation(stock: StockStore) -> None:
    await seed(stock, S1=5, S2=1)
    result = await stock.reserve(ask("k1", ("SKU1", "S1", 2), ("SKU1", "S2", 3)))
    assert not result.granted
    assert result.short == (ShortLine("SKU1", "S2", 3, 1),)
    assert (await level(stock, "SKU1", "S1")).reserved == 0


async def test_multi_sku_reservation_is_all_or_nothing(stock: StockStore) -> None:
    await seed(stock, "A", S1=5)
    await seed(stock, "B", S1=0)
    result = await stock.reserve(ask("k1", ("A", "S1", 1), ("B", "S1", 1)))
    assert not result.granted
    assert (await level(stock, "A", "S1")).reserved == 0


async def test_floor_keeps_stock_for_other_channels(stock: StockStore) -> None:
    await seed(stock, S1=5)
    refused = await stock.reserve(ask("k1", ("SKU1", "S1", 3, 3)))
    assert refused.short == (ShortLine("SKU1", "S1", 3, 2),)
    assert (await stock.reserve(ask("k2", ("SKU1", "S1", 2, 3)))).granted


async def test_duplicate_lines_are_summed_before_the_check(stock: StockStore) -> None:
    await seed(stock, S1=3)
    result = await stock.reserve(ask("k1", ("SKU1", "S1", 2), ("SKU1", "S1", 2)))
    assert result.short == (ShortLine("SKU1", "S1", 4, 3),)
    assert (await level(stock, "SKU1", "S1")).reserved == 0


async def test_partial_reservation_takes_what_there_is(stock: StockStore) -> None:
    await seed(stock, S1=2, S2=0)
    result = await stock.reserve(ask("k1", ("SKU1", "S1", 5), ("SKU1", "S2", 1), partial=True))
    assert result.reservation is not None
    assert [(line.location, line.qty) for line in result.reservation.lines] == [("S1", 2)]
    assert set(result.short) == {ShortLine("SKU1", "S1", 5, 2), ShortLine("SKU1", "S2", 1, 0)}


async def test_location_without_stock_row_is_short(stock: StockStore) -> None:
    result = await stock.reserve(ask("k1", ("SKU1", "NOWHERE", 1)))
    assert result.short == (ShortLine("SKU1", "NOWHERE", 1, 0),)


async def test_same_key_and_body_returns_the_same_reservation_once(stock: StockStore) -> None:
    await seed(stock, S1=5)
    first = await stock.reserve(ask("k1", ("SKU1", "S1", 2)))
    again = await stock.reserve(ask("k1", ("SKU1", "S1", 2)))
    assert again.replayed and again.reservation == first.reservation
    assert (await level(stock, "SKU1", "S1")).reserved == 2


async def test_partial_reservation_replay_names_the_same_short_lines(stock: StockStore) -> None:
    await seed(stock, S1=2, S2=0)
    first = await stock.reserve(ask("k1", ("SKU1", "S1", 5), ("SKU1", "S2", 1), partial=True))
    await seed(stock, S1=9, S2=9)
    again = await stock.reserve(ask("k1", ("SKU1", "S1", 5), ("SKU1", "S2", 1), partial=True))
    assert again.replayed and again.reservation == first.reservation
    assert set(again.short) == set(first.short)


async def test_same_key_with_another_body_is_a_conflict(stock: StockStore) -> None:
    await seed(stock, S1=5)
    await stock.reserve(ask("k1", ("SKU1", "S1", 2)))
    with pytest.raises(IdempotencyConflict):
        await stock.reserve(ask("k1", ("SKU1", "S1", 3)))
    assert (await level(stock, "SKU1", "S1")).reserved == 2


async def test_invalid_request_names_the_field(stock: StockStore) -> None:
    with pytest.raises(InvalidStockInput) as info:
        await stock.reserve(ask("k1", ("SKU1", "S1", 1), ("SKU1", "S1", -1)))
    assert info.value.field == "lines[1].qty"


async def test_concurrent_requests_never_take_more_than_there_is(stock: StockStore) -> None:
    await seed(stock, S1=4, S2=3, S3=3)
    locations = ["S1", "S2", "S3"]
    results = await asyncio.gather(
        *(stock.reserve(ask(f"k{i}", ("SKU1", locations[i % 3], 1))) for i in range(40))
    )
    assert sum(r.granted for r in results) == 10
    levels = (await stock.get_levels(["SKU1"]))["SKU1"]
    assert all(lv.reserved == lv.sellable for lv in levels.values())


# ---- commit, release, expiry ------------------------------------------------------------------


async def test_commit_takes_the_units_out_of_sellable_and_reserved(stock: StockStore) -> None:
    await seed(stock, S1=5)
    held = (await stock.reserve(ask("k1", ("SKU1", "S1", 2)))).reservation
    assert held is not None
    done = await stock.commit(held.id)
    assert done.status == "committed"
    assert await level(stock, "SKU1", "S1") == Levels(sellable=3, reserved=0)


async def test_commit_twice_changes_stock_once(stock: StockStore) -> None:
    await seed(stock, S1=5)
    held = (await stock.reserve(ask("k1", ("SKU1", "S1", 2)))).reservation
    assert held is not None
    await stock.commit(held.id)
    assert (await stock.commit(held.id)).status == "committed"
    assert (await level(stock, "SKU1", "S1")).sellable == 3


async def test_release_gives_the_units_back(stock: StockStore) -> None:
    await seed(stock, S1=5)
    held = (await stock.reserve(ask("k1", ("SKU1", "S1", 2)))).reservation
    assert held is not None
    assert (await stock.release(held.id)).status == "released"
    assert (await stock.release(held.id)).status == "released"
    assert await level(stock, "SKU1", "S1") == Levels(sellable=5, reserved=0)


async def test_released_reservation_cannot_be_committed(stock: StockStore) -> None:
    await seed(stock, S1=5)
    held = (await stock.reserve(ask("k1", ("SKU1", "S1", 2)))).reservation
    assert held is not None
    await stock.release(held.id)
    with pytest.raises(ReservationStateError):
        await stock.commit(held.id)


async def test_committed_reservation_cannot_be_released(stock: StockStore) -> None:
    await seed(stock, S1=5)
    held = (await stock.reserve(ask("k1", ("SKU1", "S1", 2)))).reservation
    assert held is not None
    await stock.commit(held.id)
    with pytest.raises(ReservationStateError):
        await stock.release(held.id)


async def test_unknown_reservation_is_not_found(stock: StockStore) -> None:
    assert await stock.get_reservation("0" * 32) is None
    with pytest.raises(ReservationNotFound):
        await stock.commit("0" * 32)
    with pytest.raises(ReservationNotFound):
        await stock.release("0" * 32)


async def test_expired_hold_is_released_on_the_next_touch(stock: StockStore, clock: FakeClock) -> None:
    await seed(stock, S1=5)
    held = (await stock.reserve(ask("k1", ("SKU1", "S1", 2), ttl=30))).reservation
    assert held is not None
    clock.advance(29)
    assert (await level(stock, "SKU1", "S1")).reserved == 2
    clock.advance(1)
    assert (await level(stock, "SKU1", "S1")).reserved == 0
    found = await stock.get_reservation(held.id)
    assert found is not None and found.status == "expired"


async def test_available_gives_an_expired_hold_back_before_reading(
    stock: StockStore, clock: FakeClock
) -> None:
    await seed(stock, S1=5)
    assert (await stock.reserve(ask("k1", ("SKU1", "S1", 2), ttl=30))).reservation is not None
    clock.advance(29)
    assert (await stock.get_available(["SKU1"])) == {"SKU1": {"S1": 3}}
    clock.advance(1)
    assert (await stock.get_available(["SKU1", "SKU1"])) == {"SKU1": {"S1": 5}}
    assert (await level(stock, "SKU1", "S1")).reserved == 0


async def test_a_refusal_from_redis_tells_what_it_found_of_every_sku(stock: StockStore) -> None:
    await seed(stock, S1=5, S2=1)
    await seed(stock, "SKU2", S1=2)
    refused = await stock.reserve(ask("k1", ("SKU1", "S1", 2), ("SKU2", "S1", 3), ("SKU1", "S2", 1, 1)))
    assert refused.reservation is None
    assert {(s.sku, s.location, s.requested, s.available) for s in refused.short} == {
        ("SKU2", "S1", 3, 2),
        ("SKU1", "S2", 1, 0),
    }
    read = {"SKU1": {"S1": 5, "S2": 1}, "SKU2": {"S1": 2}}
    # Redis on one node tells what a read would have found (a cluster, when the SKUs share a slot); the
    # other stores tell nothing. Nothing was taken.
    if isinstance(stock, RedisStockStore) and not stock.cluster:
        assert refused.available == read
    else:
        assert refused.available in (None, read)
    assert await stock.get_available(["SKU1", "SKU2"]) == read


async def test_expired_reservation_cannot_be_committed(stock: StockStore, clock: FakeClock) -> None:
    await seed(stock, S1=5)
    held = (await stock.reserve(ask("k1", ("SKU1", "S1", 2), ttl=30))).reservation
    assert held is not None
    clock.advance(31)
    with pytest.raises(ReservationStateError):
        await stock.commit(held.id)
    assert await level(stock, "SKU1", "S1") == Levels(sellable=5, reserved=0)


async def test_sweep_releases_every_expired_hold(stock: StockStore, clock: FakeClock) -> None:
    await seed(stock, S1=5)
    await seed(stock, "SKU2", S1=5)
    await stock.reserve(ask("k1", ("SKU1", "S1", 1), ttl=10))
    await stock.reserve(ask("k2", ("SKU2", "S1", 1), ttl=10))
    await stock.reserve(ask("k3", ("SKU2", "S1", 1), ttl=100))
    clock.advance(11)
    assert await stock.sweep_expired() == 2
    assert (await level(stock, "SKU2", "S1")).reserved == 1


async def test_expired_stock_can_be_reserved_again(stock: StockStore, clock: FakeClock) -> None:
    await seed(stock, S1=1)
    await stock.reserve(ask("k1", ("SKU1", "S1", 1), ttl=10))
    assert not (await stock.reserve(ask("k2", ("SKU1", "S1", 1)))).granted
    clock.advance(10)
    assert (await stock.reserve(ask("k3", ("SKU1", "S1", 1)))).granted


async def test_orders_taking_the_same_skus_in_opposite_orders_all_finish(stock: StockStore) -> None:
    await seed(stock, "A", S1=10)
    await seed(stock, "B", S1=10)
    orders = [
        ask(f"k{i}", *([("A", "S1", 1), ("B", "S1", 1)] if i % 2 else [("B", "S1", 1), ("A", "S1", 1)]))
        for i in range(30)
    ]
    results = await asyncio.gather(*(stock.reserve(o) for o in orders))
    assert sum(r.granted for r in results) == 10
    assert (await level(stock, "A", "S1")).reserved == (await level(stock, "B", "S1")).reserved == 10


async def test_concurrent_commit_and_release_of_one_reservation_apply_once(stock: StockStore) -> None:
    await seed(stock, S1=5)
    held = (await stock.reserve(ask("k1", ("SKU1", "S1", 2)))).reservation
    assert held is not None
    outcomes = await asyncio.gather(stock.commit(held.id), stock.release(held.id), return_exceptions=True)
    finals = {o.status for o in outcomes if not isinstance(o, BaseException)}
    assert len(finals) == 1 and all(
        isinstance(o, ReservationStateError) for o in outcomes if isinstance(o, BaseException)
    )
    expected = Levels(sellable=3) if finals == {"committed"} else Levels(sellable=5)
    assert await level(stock, "SKU1", "S1") == expected
