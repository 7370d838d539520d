"""The simulator's in-memory ledger keeps the stock model's rules."""

from __future__ import annotations

import random

import pytest

from simulators.memory_store import MemoryStock


def _store() -> MemoryStock:
    return MemoryStock([[5, 2], [0, 3]])


def test_a_reservation_takes_from_available_but_not_from_sellable() -> None:
    store = _store()
    assert store.reserve([(0, 0, 3)]) is not None
    assert (store.sellable[0][0], store.reserved[0][0], store.available(0, 0)) == (5, 3, 2)


def test_a_reservation_is_all_or_nothing() -> None:
    store = _store()
    assert store.reserve([(0, 0, 1), (1, 0, 1)]) is None
    assert store.reserved == [[0, 0], [0, 0]]


def test_duplicate_lines_are_summed_before_the_check() -> None:
    store = _store()
    assert store.reserve([(0, 1, 2), (0, 1, 1)]) is None
    assert store.reserve([(0, 1, 1), (0, 1, 1)]) is not None


def test_commit_takes_the_units_out_as_sold() -> None:
    store = _store()
    reservation = store.reserve([(0, 0, 2)])
    assert reservation is not None
    store.commit(reservation)
    assert (store.sellable[0][0], store.reserved[0][0], store.totals.sold) == (3, 0, 2)


def test_release_gives_the_units_back() -> None:
    store = _store()
    reservation = store.reserve([(0, 0, 2)])
    assert reservation is not None
    store.release(reservation)
    assert store.available(0, 0) == 5


def test_a_zero_quantity_reservation_is_refused() -> None:
    with pytest.raises(ValueError):
        _store().reserve([(0, 0, 0)])


def test_a_till_sale_beyond_stock_is_recorded_as_negative() -> None:
    store = _store()
    store.sale(1, 0, 2)
    assert store.sellable[1][0] == -2
    assert store.totals.negative_sales == 2


def test_conservation_holds_through_any_mix_of_movements() -> None:
    rng = random.Random(5)
    store = MemoryStock([[rng.randint(0, 9) for _ in range(4)] for _ in range(3)])
    reservations: list[int] = []
    for _ in range(2000):
        sku, loc, other, qty = rng.randrange(3), rng.randrange(4), rng.randrange(4), rng.randint(1, 3)
        action = rng.randrange(8)
        if action == 0:
            reservation = store.reserve([(sku, loc, qty)])
            if reservation is not None:
                reservations.append(reservation)
        elif action == 1 and reservations:
            store.commit(reservations.pop(rng.randrange(len(reservations))))
        elif action == 2 and reservations:
            store.release(reservations.pop(rng.randrange(len(reservations))))
        elif action == 3:
            store.receipt(sku, loc, qty)
        elif action == 4:
            store.return_in(sku, loc, qty)
            store.return_disposition(sku, loc, qty, rng.random() < 0.7)
        elif action == 5 and store.available(sku, loc) >= qty:
            store.damage(sku, loc, qty)
        elif action == 6 and store.available(sku, loc) >= qty and loc != other:
            store.transfer_out(sku, loc, other, qty)
            if rng.random() < 0.5:
                store.transfer_in(sku, other, qty)
        elif action == 7 and store.available(sku, loc) >= qty:  # the runner sells only what is on hand
            store.sale(sku, loc, qty)
        assert store.conservation()["holds"]
        for reserved, sellable in zip(store.reserved, store.sellable, strict=True):
            assert all(r <= s for r, s in zip(reserved, sellable, strict=True))
