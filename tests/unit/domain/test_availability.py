"""Channel availability: floors, low-stock thresholds, eligibility and per-order caps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.domain.availability import (
    LocationPolicy,
    PreparedPolicies,
    protected_level,
    sellable_at,
    sellable_units,
    sku_availability,
)


def test_a_location_gives_what_is_above_its_floor() -> None:
    assert sellable_at(10, 3, 0) == 7


def test_a_location_below_its_floor_gives_nothing() -> None:
    assert sellable_at(2, 3, 0) == 0


def test_a_location_below_its_low_stock_threshold_gives_nothing() -> None:
    assert sellable_at(4, 1, 5) == 0


def test_a_location_at_its_low_stock_threshold_gives_above_its_floor() -> None:
    assert sellable_at(5, 1, 5) == 4


def test_the_sku_total_sums_eligible_locations_and_skips_ineligible_ones() -> None:
    result = sku_availability(
        "A",
        [("s1", 10), ("s2", 6), ("mp", 50)],
        {"s1": LocationPolicy(True, 2), "s2": LocationPolicy(True, 1), "mp": LocationPolicy(False)},
    )
    assert result.sellable == 8 + 5
    assert [row.sellable for row in result.locations] == [8, 5, 0]


def test_a_location_without_a_policy_is_not_eligible() -> None:
    result = sku_availability("A", [("s1", 10)], {})
    assert result.sellable == 0
    assert result.locations[0].eligible is False


def test_a_negative_location_never_hides_stock_elsewhere() -> None:
    result = sku_availability(
        "A", [("s1", -4), ("s2", 6)], {"s1": LocationPolicy(True), "s2": LocationPolicy(True)}
    )
    assert result.sellable == 6


def test_a_promotion_cap_limits_the_total() -> None:
    result = sku_availability(
        "A",
        [("s1", 10), ("s2", 10)],
        {"s1": LocationPolicy(True, per_order_cap=3), "s2": LocationPolicy(True)},
    )
    assert (result.sellable, result.uncapped, result.per_order_cap) == (3, 20, 3)


def test_the_policy_reads_a_ruleset_result() -> None:
    policy = LocationPolicy.from_result(
        {"eligible": True, "floor": 2, "low_stock_threshold": 4, "per_order_cap": 5}
    )
    assert policy == LocationPolicy(True, 2, 4, 5)


@given(st.integers(-20, 60), st.integers(0, 20), st.integers(0, 30), st.integers(1, 80))
def test_a_reservation_leaving_the_protected_level_grants_exactly_what_is_sellable(
    available: int, floor: int, threshold: int, qty: int
) -> None:
    # a reservation takes qty while available - qty >= protected level
    grants = available - qty >= protected_level(available, floor, threshold)
    assert grants == (qty <= sellable_at(available, floor, threshold))


def test_without_detail_the_total_is_the_same_and_rows_are_left_out() -> None:
    stock = [("s1", 10), ("s2", 3), ("mp", 50)]
    policies = {"s1": LocationPolicy(True, 2), "s2": LocationPolicy(True, 0, 4), "mp": LocationPolicy(False)}
    brief = sku_availability("A", stock, policies, detail=False)
    assert (brief.sellable, brief.locations) == (sku_availability("A", stock, policies).sellable, ())


_policies = st.dictionaries(
    st.sampled_from(["S1", "S2", "S3", "DC", "X"]),
    st.builds(
        LocationPolicy,
        eligible=st.booleans(),
        floor=st.integers(0, 10),
        low_stock_threshold=st.integers(0, 12),
        per_order_cap=st.none() | st.integers(0, 15),
    ),
)


@given(_policies, st.dictionaries(st.sampled_from(["S1", "S2", "S3", "DC", "Y"]), st.integers(0, 30)))
def test_prepared_policies_give_what_the_detailed_rule_gives(
    policies: dict[str, LocationPolicy], available: dict[str, int]
) -> None:
    detailed = sku_availability("A", sorted(available.items()), policies, detail=False)
    fast = sellable_units("A", available, PreparedPolicies.of(policies))
    assert fast == detailed
