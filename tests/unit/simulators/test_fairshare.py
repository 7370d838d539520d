"""A DC's stock shared between the stores that ordered from it and its own channels."""

from __future__ import annotations

from simulators.fairshare import StoreNeed, fair_shares


def test_orders_that_fit_in_the_spare_stock_are_sent_as_ordered() -> None:
    needs = [StoreNeed(2.0, 1, 12), StoreNeed(0.0, 0, 6)]
    assert fair_shares(18, 50.0, needs) == [12, 6]


def test_nothing_is_sent_without_spare_stock() -> None:
    assert fair_shares(0, 0.0, [StoreNeed(2.0, 0, 12)]) == [0]
    assert fair_shares(-3, 0.0, [StoreNeed(2.0, 0, 12)]) == [0]


def test_a_short_dc_gives_every_party_the_same_days_of_cover() -> None:
    # 12 units for rates 4 + 1 + 1 a day: 2 days each; the DC's own channels keep 2 x 4 = 8
    needs = [StoreNeed(1.0, 0, 10), StoreNeed(1.0, 0, 10)]
    assert fair_shares(12, 4.0, needs) == [2, 2]
    # a store's position counts in its cover: the one that holds 3 days is above the (12 + 1) / 5 = 2.6
    # days the others reach, so it gets nothing
    needs = [StoreNeed(1.0, 1, 10), StoreNeed(1.0, 3, 10)]
    assert fair_shares(12, 4.0, needs) == [1, 0]


def test_a_store_above_the_common_cover_gets_nothing_and_none_gets_more_than_it_ordered() -> None:
    needs = [StoreNeed(1.0, 40, 10), StoreNeed(2.0, 0, 3), StoreNeed(2.0, 0, 40)]
    shares = fair_shares(30, 1.0, needs)
    assert shares[0] == 0
    assert shares[1] == 3
    assert sum(shares) <= 30
    assert shares[2] > shares[1]


def test_without_own_demand_what_the_cover_leaves_goes_to_the_orders_in_turn() -> None:
    # the store without demand gets nothing by cover, then what the other's order leaves
    needs = [StoreNeed(0.0, 0, 10), StoreNeed(1.0, 0, 5)]
    assert fair_shares(8, 0.0, needs) == [3, 5]


def test_the_shares_never_exceed_the_spare_stock() -> None:
    for spare in range(0, 60, 7):
        for own in (0.0, 0.5, 3.0, 40.0):
            needs = [StoreNeed(r / 3, p, q) for r, p, q in [(1, 0, 12), (7, 5, 24), (3, 2, 6), (0, 0, 4)]]
            shares = fair_shares(spare, own, needs)
            assert sum(shares) <= spare
            assert all(0 <= s <= n.qty for s, n in zip(shares, needs, strict=True))
