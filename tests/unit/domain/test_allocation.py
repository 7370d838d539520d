"""The allocator: choices under floors, eligibility, capabilities, distance, capacity, splits and ranking."""

from __future__ import annotations

from typing import Any

import pytest

from service.domain.allocation import (
    MAX_COMBINATIONS,
    AllocationPolicy,
    Allocator,
    Destination,
    Fulfillment,
    Location,
    OrderLine,
    allocate,
    haversine_km,
    plan_to_dict,
)
from service.domain.errors import InvalidInput, PolicyError

HOME = Destination(51.5, -0.12, "south")


def loc(
    id: str,
    type: str = "store",
    km_north: float = 0.0,
    *,
    caps: tuple[str, ...] = ("ship_from_store", "pickup"),
    capacity: int | None = None,
    priority: int = 100,
) -> Location:
    # one degree of latitude is about 111.2 km
    return Location(
        id, type, "south", HOME.lat + km_north / 111.195, HOME.lon, frozenset(caps), capacity, priority
    )


def policy(**overrides: Any) -> AllocationPolicy:
    result: dict[str, Any] = {
        "eligible_location_types": ["store", "dc"],
        "floors": {},
        "ranking": ["fewest_splits", "distance"],
        "max_splits": 3,
        "allow_partial": False,
    }
    result.update(overrides)
    return AllocationPolicy.from_result(result)


def picks(plan: Any, line: int = 0) -> dict[str, int]:
    return {p.location: p.qty for p in plan.lines[line].picks}


def reasons(plan: Any, line: int = 0) -> dict[str, str | None]:
    return {c.location: c.reason for c in plan.lines[line].candidates}


SHIP = Fulfillment("ship")


def test_haversine_london_to_paris_is_about_344_km() -> None:
    assert haversine_km(51.5074, -0.1278, 48.8566, 2.3522) == pytest.approx(343.5, abs=1.0)


def test_one_location_that_covers_the_line_beats_a_nearer_split() -> None:
    locations = [loc("near-a", km_north=1), loc("near-b", km_north=2), loc("far", km_north=50)]
    stock = {"A": {"near-a": 3, "near-b": 3, "far": 10}}
    plan = allocate([OrderLine("A", 5)], locations, stock, policy(), SHIP, HOME)
    assert picks(plan) == {"far": 5}


def test_distance_breaks_ties_between_single_location_covers() -> None:
    locations = [loc("far", km_north=50), loc("near", km_north=5)]
    stock = {"A": {"far": 10, "near": 10}}
    plan = allocate([OrderLine("A", 4)], locations, stock, policy(), SHIP, HOME)
    assert picks(plan) == {"near": 4}


def test_priority_ranks_before_distance_when_the_ruleset_says_so() -> None:
    locations = [loc("near", km_north=1, priority=5), loc("preferred", km_north=40, priority=1)]
    stock = {"A": {"near": 10, "preferred": 10}}
    plan = allocate(
        [OrderLine("A", 2)],
        locations,
        stock,
        policy(ranking=["fewest_splits", "priority", "distance"]),
        SHIP,
        HOME,
    )
    assert picks(plan) == {"preferred": 2}


def test_stock_level_ranking_takes_from_the_deepest_location() -> None:
    locations = [loc("thin", km_north=1), loc("deep", km_north=30)]
    stock = {"A": {"thin": 4, "deep": 40}}
    plan = allocate(
        [OrderLine("A", 2)], locations, stock, policy(ranking=["stock_level", "distance"]), SHIP, HOME
    )
    assert picks(plan) == {"deep": 2}


def test_distance_ranked_before_fewest_splits_allows_a_nearer_split() -> None:
    locations = [loc("near-a", km_north=1), loc("near-b", km_north=2), loc("far", km_north=50)]
    stock = {"A": {"near-a": 3, "near-b": 3, "far": 10}}
    plan = allocate(
        [OrderLine("A", 5)], locations, stock, policy(ranking=["distance", "fewest_splits"]), SHIP, HOME
    )
    assert picks(plan) == {"near-a": 3, "near-b": 2}


def test_a_location_gives_only_what_is_above_its_floor() -> None:
    locations = [loc("s1")]
    stock = {"A": {"s1": 7}}
    plan = allocate(
        [OrderLine("A", 5)], locations, stock, policy(floors={"store": 3}, allow_partial=True), SHIP, HOME
    )
    assert picks(plan) == {"s1": 4}
    assert plan.lines[0].unallocated == 1


def test_a_location_at_its_floor_is_dropped_as_below_floor() -> None:
    plan = allocate(
        [OrderLine("A", 1)],
        [loc("s1")],
        {"A": {"s1": 3}},
        policy(floors={"store": 3}, allow_partial=True),
        SHIP,
        HOME,
    )
    assert reasons(plan) == {"s1": "below_floor"}


def test_a_location_of_an_ineligible_type_is_dropped() -> None:
    locations = [loc("dc1", "dc"), loc("s1")]
    stock = {"A": {"dc1": 10, "s1": 10}}
    plan = allocate([OrderLine("A", 1)], locations, stock, policy(eligible_location_types=["dc"]), SHIP, HOME)
    assert picks(plan) == {"dc1": 1}
    assert reasons(plan)["s1"] == "ineligible_type"


def test_a_location_beyond_the_maximum_distance_is_dropped() -> None:
    locations = [loc("far", km_north=120), loc("near", km_north=10)]
    stock = {"A": {"far": 10, "near": 1}}
    plan = allocate(
        [OrderLine("A", 2)], locations, stock, policy(max_distance_km=100, allow_partial=True), SHIP, HOME
    )
    assert picks(plan) == {"near": 1}
    assert reasons(plan)["far"] == "beyond_max_distance"


def test_ship_from_store_needs_the_capability() -> None:
    locations = [loc("plain", caps=()), loc("capable", km_north=20)]
    stock = {"A": {"plain": 10, "capable": 10}}
    plan = allocate([OrderLine("A", 1)], locations, stock, policy(), Fulfillment("ship_from_store"), HOME)
    assert picks(plan) == {"capable": 1}
    assert reasons(plan)["plain"] == "no_capability"


def test_pickup_uses_only_the_pickup_store() -> None:
    locations = [loc("chosen", km_north=30), loc("other", km_north=1)]
    stock = {"A": {"chosen": 5, "other": 50}}
    plan = allocate(
        [OrderLine("A", 2)], locations, stock, policy(), Fulfillment("pickup", pickup_location="chosen"), HOME
    )
    assert picks(plan) == {"chosen": 2}
    assert reasons(plan)["other"] == "not_pickup_location"


def test_pickup_ignores_the_distance_limit() -> None:
    plan = allocate(
        [OrderLine("A", 1)],
        [loc("chosen", km_north=300)],
        {"A": {"chosen": 5}},
        policy(max_distance_km=10),
        Fulfillment("pickup", pickup_location="chosen"),
        HOME,
    )
    assert picks(plan) == {"chosen": 1}


def test_pickup_without_a_pickup_location_is_invalid() -> None:
    with pytest.raises(InvalidInput) as err:
        Fulfillment("pickup")
    assert err.value.field == "pickup_location"


def test_unknown_fulfillment_type_is_invalid() -> None:
    with pytest.raises(InvalidInput) as err:
        Fulfillment("drone")
    assert err.value.field == "fulfillment"


def test_a_location_without_stock_is_dropped_as_no_stock() -> None:
    plan = allocate(
        [OrderLine("A", 1)], [loc("empty"), loc("full")], {"A": {"full": 2}}, policy(), SHIP, HOME
    )
    assert reasons(plan)["empty"] == "no_stock"


def test_daily_capacity_is_shared_across_lines() -> None:
    locations = [loc("small", km_north=1, capacity=3), loc("big", km_north=40)]
    stock = {"A": {"small": 10, "big": 10}, "B": {"small": 10, "big": 10}}
    plan = allocate([OrderLine("A", 3), OrderLine("B", 2)], locations, stock, policy(), SHIP, HOME)
    assert picks(plan, 0) == {"small": 3}
    assert picks(plan, 1) == {"big": 2}
    assert reasons(plan, 1)["small"] == "no_capacity"


def test_two_lines_of_one_sku_never_take_the_same_units() -> None:
    locations = [loc("s1", km_north=1), loc("s2", km_north=9)]
    stock = {"A": {"s1": 4, "s2": 4}}
    plan = allocate([OrderLine("A", 3), OrderLine("A", 3)], locations, stock, policy(), SHIP, HOME)
    assert picks(plan, 0) == {"s1": 3}
    assert picks(plan, 1) == {"s2": 3}


def test_partial_allocation_reports_what_is_unallocated() -> None:
    plan = allocate(
        [OrderLine("A", 10)],
        [loc("s1"), loc("s2")],
        {"A": {"s1": 3, "s2": 4}},
        policy(allow_partial=True),
        SHIP,
        HOME,
    )
    assert sum(picks(plan).values()) == 7
    assert plan.lines[0].unallocated == 3
    assert not plan.complete


def test_without_partial_an_order_that_cannot_be_served_in_full_gets_nothing() -> None:
    locations = [loc("s1")]
    stock = {"A": {"s1": 10}, "B": {"s1": 1}}
    plan = allocate([OrderLine("A", 2), OrderLine("B", 5)], locations, stock, policy(), SHIP, HOME)
    assert [line.picks for line in plan.lines] == [(), ()]
    assert [line.unallocated for line in plan.lines] == [2, 5]


def test_no_line_uses_more_locations_than_max_splits() -> None:
    locations = [loc(f"s{i}", km_north=i) for i in range(6)]
    stock = {"A": {f"s{i}": 2 for i in range(6)}}
    plan = allocate(
        [OrderLine("A", 12)], locations, stock, policy(max_splits=2, allow_partial=True), SHIP, HOME
    )
    assert len(plan.lines[0].picks) == 2
    assert plan.lines[0].unallocated == 8


def test_the_search_is_bounded_and_says_which_candidates_were_outside_the_pool() -> None:
    locations = [loc(f"s{i:02d}", km_north=i) for i in range(40)]
    stock = {"A": {f"s{i:02d}": 1 for i in range(40)}}
    plan = allocate(
        [OrderLine("A", 4)],
        locations,
        stock,
        policy(max_splits=4, ranking=["distance", "fewest_splits"]),
        SHIP,
        HOME,
        pool_size=12,
    )
    line = plan.lines[0]
    assert line.combinations_searched <= MAX_COMBINATIONS
    assert {c.status for c in line.candidates} >= {"chosen", "outside_search_pool"}
    assert picks(plan) == {"s00": 1, "s01": 1, "s02": 1, "s03": 1}


def test_a_coverage_by_deep_locations_outside_the_ranking_pool_is_still_found() -> None:
    locations = [loc(f"s{i:02d}", km_north=i) for i in range(30)] + [loc("deep", km_north=500)]
    stock = {"A": {**{f"s{i:02d}": 1 for i in range(30)}, "deep": 50}}
    plan = allocate([OrderLine("A", 20)], locations, stock, policy(max_splits=1), SHIP, HOME, pool_size=5)
    assert picks(plan) == {"deep": 20}


def test_the_full_trace_lists_every_candidate_with_a_score_or_a_reason() -> None:
    locations = [loc("s1", km_north=1), loc("dc1", "dc", km_north=2), loc("empty", km_north=3)]
    stock = {"A": {"s1": 5, "dc1": 5}}
    plan = allocate(
        [OrderLine("A", 1)], locations, stock, policy(eligible_location_types=["store"]), SHIP, HOME
    )
    view = plan_to_dict(plan, with_candidates=True)
    rows = {c["location"]: c for c in view["lines"][0]["candidates"]}
    assert set(rows) == {"s1", "dc1", "empty"}
    assert rows["s1"]["status"] == "chosen" and "score" in rows["s1"]
    assert rows["dc1"]["reason"] == "ineligible_type"
    assert rows["empty"]["reason"] == "no_stock"


def test_the_rules_trace_leaves_candidates_out() -> None:
    plan = allocate([OrderLine("A", 1)], [loc("s1")], {"A": {"s1": 5}}, policy(), SHIP, HOME)
    assert "candidates" not in plan_to_dict(plan, with_candidates=False)["lines"][0]


def test_a_line_quantity_below_one_is_invalid() -> None:
    with pytest.raises(InvalidInput) as err:
        allocate([OrderLine("A", 0)], [loc("s1")], {}, policy(), SHIP, HOME)
    assert err.value.field == "lines[0].qty"


def test_a_location_listed_twice_is_invalid_with_or_without_a_kept_allocator() -> None:
    twice = [loc("s1"), loc("s2"), loc("s1", km_north=5)]
    kept = Allocator.over(twice)
    over_others = Allocator.over([loc("s1"), loc("s2")])
    for allocator in (None, kept, over_others):
        with pytest.raises(InvalidInput) as err:
            allocate([OrderLine("A", 1)], twice, {"A": {"s1": 5}}, policy(), SHIP, HOME, allocator=allocator)
        assert (err.value.field, err.value.reason) == ("locations", "location 's1' is listed twice")
    # an allocator kept over other locations does not vouch for these: the order's own are checked
    plan = allocate([OrderLine("A", 1)], [loc("s2")], {"A": {"s2": 5}}, policy(), SHIP, HOME, allocator=kept)
    assert picks(plan) == {"s2": 1}


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"ranking": ["nearest"]}, "ranking"),
        ({"max_splits": 0}, "max_splits"),
        ({"floors": {"store": -1}}, "floors"),
        ({"eligible_location_types": "store"}, "eligible_location_types"),
        ({"allow_partial": "yes"}, "allow_partial"),
    ],
)
def test_a_policy_the_allocator_cannot_apply_is_refused(override: dict[str, Any], key: str) -> None:
    with pytest.raises(PolicyError) as err:
        policy(**override)
    assert err.value.key == key


def test_fewest_splits_is_put_first_when_the_ruleset_leaves_it_out() -> None:
    assert policy(ranking=["distance"]).effective_ranking == ("fewest_splits", "distance")


def test_a_location_below_its_low_stock_threshold_gives_nothing() -> None:
    locations = [loc("low", km_north=1), loc("ok", km_north=9)]
    stock = {"A": {"low": 3, "ok": 5}}
    plan = allocate(
        [OrderLine("A", 1)],
        locations,
        stock,
        policy(floors={"store": 1}),
        SHIP,
        HOME,
        low_stock_thresholds={"A": {"low": 4, "ok": 4}},
    )
    assert picks(plan) == {"ok": 1}
    assert reasons(plan)["low"] == "below_low_stock_threshold"
