"""Allocator invariants over generated orders, stock and policies."""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.allocation import (
    AllocationPolicy,
    Destination,
    Fulfillment,
    Location,
    OrderLine,
    allocate,
)

SKUS = ("A", "B", "C")
TYPES = ("store", "dc", "dark_store")
HOME = Destination(52.0, 0.0)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 14))
    locations = [
        Location(
            f"L{i}",
            draw(st.sampled_from(TYPES)),
            "r",
            52.0 + draw(st.floats(-2, 2)),
            draw(st.floats(-2, 2)),
            frozenset(draw(st.sets(st.sampled_from(("ship_from_store", "pickup"))))),
            draw(st.none() | st.integers(0, 30)),
            draw(st.integers(1, 5)),
        )
        for i in range(n)
    ]
    stock = {
        sku: {loc.id: draw(st.integers(-3, 25)) for loc in locations if draw(st.booleans())} for sku in SKUS
    }
    result = {
        "eligible_location_types": draw(st.lists(st.sampled_from(TYPES), min_size=1, unique=True)),
        "floors": {t: draw(st.integers(0, 6)) for t in TYPES},
        "ranking": draw(st.permutations(["fewest_splits", "distance", "priority", "stock_level"])),
        "max_splits": draw(st.integers(1, 4)),
        "max_distance_km": draw(st.none() | st.floats(10, 400)),
        "allow_partial": draw(st.booleans()),
    }
    lines = [
        OrderLine(draw(st.sampled_from(SKUS)), draw(st.integers(1, 40)))
        for _ in range(draw(st.integers(1, 4)))
    ]
    kind = draw(st.sampled_from(("ship", "ship_from_store", "pickup")))
    fulfillment = Fulfillment(
        kind, draw(st.sampled_from([loc.id for loc in locations])) if kind == "pickup" else None
    )
    return {
        "locations": locations,
        "stock": stock,
        "policy": AllocationPolicy.from_result(result),
        "lines": lines,
        "fulfillment": fulfillment,
    }


def run(s: dict[str, Any]) -> Any:
    return allocate(s["lines"], s["locations"], s["stock"], s["policy"], s["fulfillment"], HOME, pool_size=6)


@settings(max_examples=120, deadline=None)
@given(scenarios())
def test_no_location_is_taken_below_its_floor_nor_over_its_available(s: dict[str, Any]) -> None:
    plan = run(s)
    by_id = {loc.id: loc for loc in s["locations"]}
    taken: dict[tuple[str, str], int] = defaultdict(int)
    for line in plan.lines:
        for p in line.picks:
            taken[(line.sku, p.location)] += p.qty
    for (sku, location), qty in taken.items():
        available = s["stock"][sku][location]
        assert qty <= available
        assert available - qty >= s["policy"].floor_for(by_id[location].type)


@settings(max_examples=120, deadline=None)
@given(scenarios())
def test_daily_capacity_is_never_exceeded(s: dict[str, Any]) -> None:
    plan = run(s)
    used: dict[str, int] = defaultdict(int)
    for line in plan.lines:
        for p in line.picks:
            used[p.location] += p.qty
    for loc in s["locations"]:
        if loc.capacity_remaining is not None:
            assert used[loc.id] <= max(0, loc.capacity_remaining)


@settings(max_examples=120, deadline=None)
@given(scenarios())
def test_no_line_has_more_splits_than_allowed_and_quantities_add_up(s: dict[str, Any]) -> None:
    plan = run(s)
    for line, ordered in zip(plan.lines, s["lines"], strict=True):
        assert len({p.location for p in line.picks}) == len(line.picks) <= s["policy"].max_splits
        assert all(p.qty > 0 for p in line.picks)
        assert line.allocated + line.unallocated == ordered.qty


@settings(max_examples=120, deadline=None)
@given(scenarios())
def test_without_partial_the_order_is_served_in_full_or_not_at_all(s: dict[str, Any]) -> None:
    plan = run(s)
    if not s["policy"].allow_partial:
        assert plan.complete or all(not line.picks for line in plan.lines)


@settings(max_examples=120, deadline=None)
@given(scenarios())
def test_only_eligible_capable_locations_serve(s: dict[str, Any]) -> None:
    plan = run(s)
    by_id = {loc.id: loc for loc in s["locations"]}
    fulfillment = s["fulfillment"]
    for line in plan.lines:
        for p in line.picks:
            loc = by_id[p.location]
            assert loc.type in s["policy"].eligible_location_types
            if fulfillment.type == "pickup":
                assert loc.id == fulfillment.pickup_location
            if fulfillment.type == "ship_from_store":
                assert "ship_from_store" in loc.capabilities


@settings(max_examples=120, deadline=None)
@given(scenarios())
def test_a_single_line_uses_the_fewest_splits_that_cover_it(s: dict[str, Any]) -> None:
    line = s["lines"][0]
    result = {
        "eligible_location_types": sorted(s["policy"].eligible_location_types),
        "floors": dict(s["policy"].floors),
        "ranking": ["fewest_splits", "distance"],
        "max_splits": s["policy"].max_splits,
        "allow_partial": True,
    }
    policy = AllocationPolicy.from_result(result)
    plan = allocate([line], s["locations"], s["stock"], policy, Fulfillment("ship"), HOME, pool_size=3)
    by_id = {loc.id: loc for loc in s["locations"]}
    giveable = []
    for location, available in s["stock"][line.sku].items():
        loc = by_id[location]
        if loc.type in policy.eligible_location_types:
            units = max(0, available - policy.floor_for(loc.type))
            if loc.capacity_remaining is not None:
                units = min(units, max(0, loc.capacity_remaining))
            giveable.append(units)
    # brute force: the smallest number of locations whose giveable units cover the line
    best = next(
        (
            k
            for k in range(1, policy.max_splits + 1)
            if any(sum(c) >= line.qty for c in combinations(giveable, k))
        ),
        None,
    )
    if best is None:
        assert plan.lines[0].unallocated > 0
    else:
        assert plan.complete
        assert len(plan.lines[0].picks) == best
