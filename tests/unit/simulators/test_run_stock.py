"""A run's stock is a `MemoryStockStore` driven through its synchronous core: the core keeps the stock
model's rules, the store's async methods see what a run did, and conservation holds."""

from __future__ import annotations

import asyncio
import random

import pytest

from service.stock.store import Levels, ReservationLine, ReservationRequest
from simulators.stock import RunStock


def _stock() -> RunStock:
    return RunStock(["A", "B"], ["L1", "L2"], [[5, 2], [0, 3]])


def test_a_reservation_takes_from_available_but_not_from_sellable() -> None:
    stock = _stock()
    assert stock.reserve([(0, 0, 3)])
    assert (stock.sellable[0][0], stock.reserved[0][0], stock.available[0][0]) == (5, 3, 2)


def test_a_reservation_is_all_or_nothing() -> None:
    stock = _stock()
    assert not stock.reserve([(0, 0, 1), (1, 0, 1)])
    assert stock.reserved == [[0, 0], [0, 0]]
    assert stock.open_reservations == 0


def test_duplicate_lines_are_summed_before_the_check() -> None:
    stock = _stock()
    assert not stock.reserve([(0, 1, 2), (0, 1, 1)])
    assert stock.reserve([(0, 1, 1), (0, 1, 1)])


def test_commit_takes_the_units_out_as_sold() -> None:
    stock = _stock()
    assert stock.reserve([(0, 0, 2)])
    stock.commit([(0, 0, 2)])
    assert (stock.sellable[0][0], stock.reserved[0][0], stock.flows.sold, stock.open_reservations) == (
        3,
        0,
        2,
        0,
    )


def test_release_gives_the_units_back() -> None:
    stock = _stock()
    assert stock.reserve([(0, 0, 2)])
    stock.release([(0, 0, 2)])
    assert stock.available[0][0] == 5


def test_a_zero_quantity_reservation_is_refused() -> None:
    with pytest.raises(ValueError):
        _stock().reserve([(0, 0, 0)])


def test_a_till_sale_beyond_stock_is_recorded_as_negative() -> None:
    stock = _stock()
    stock.sale(1, 0, 2)
    assert stock.sellable[1][0] == -2
    assert stock.flows.negative_sales == 2


def test_the_store_sees_what_the_run_did_and_the_run_sees_what_the_store_did() -> None:
    stock = _stock()
    assert stock.reserve([(0, 0, 3)])
    stock.return_in(1, 1, 2)
    stock.transfer_out(0, 1, 0, 1)
    levels = asyncio.run(stock.store.get_levels(["A", "B"]))
    assert levels["A"]["L1"] == Levels(sellable=5, reserved=3, in_transit=1)
    assert levels["A"]["L2"] == Levels(sellable=1)
    assert levels["B"]["L2"] == Levels(sellable=3, return_pending=2)
    # the store's own reservation path checks against the same levels: 2 of L1's 5 units are left
    request = ReservationRequest("O1", "web", "k1", (ReservationLine("A", "L1", 3),), 60)
    refused = asyncio.run(stock.store.reserve(request))
    assert refused.reservation is None and refused.short[0].available == 2
    granted = asyncio.run(
        stock.store.reserve(ReservationRequest("O2", "web", "k2", (ReservationLine("A", "L1", 2),), 60))
    )
    assert granted.reservation is not None
    assert stock.available[0][0] == 0
    assert not stock.reserve([(0, 0, 1)])


def test_conservation_holds_through_any_mix_of_movements() -> None:
    rng = random.Random(5)
    stock = RunStock(["A", "B", "C"], ["L1", "L2", "L3", "L4"],
                     [[rng.randint(0, 9) for _ in range(4)] for _ in range(3)])  # fmt: skip
    held: list[list[tuple[int, int, int]]] = []
    for _ in range(2000):
        sku, loc, other, qty = rng.randrange(3), rng.randrange(4), rng.randrange(4), rng.randint(1, 3)
        action = rng.randrange(8)
        if action == 0:
            lines = [(sku, loc, qty)]
            if stock.reserve(lines):
                held.append(lines)
        elif action == 1 and held:
            stock.commit(held.pop(rng.randrange(len(held))))
        elif action == 2 and held:
            stock.release(held.pop(rng.randrange(len(held))))
        elif action == 3:
            stock.receipt(sku, loc, qty)
        elif action == 4:
            stock.return_in(sku, loc, qty)
            stock.return_disposition(sku, loc, qty, rng.random() < 0.7)
        elif action == 5 and stock.available[sku][loc] >= qty:
            stock.damage(sku, loc, qty)
        elif action == 6 and stock.available[sku][loc] >= qty and loc != other:
            stock.transfer_out(sku, loc, other, qty)
            if rng.random() < 0.5:
                stock.transfer_in(sku, other, qty)
        elif action == 7 and stock.available[sku][loc] >= qty:  # the runner sells only what is on hand
            stock.sale(sku, loc, qty)
        assert stock.conservation()["holds"]
        assert stock.open_reservations == len(held)
        for s in range(3):
            for i in range(4):
                assert stock.available[s][i] == stock.sellable[s][i] - stock.reserved[s][i]
                assert stock.reserved[s][i] <= stock.sellable[s][i]
