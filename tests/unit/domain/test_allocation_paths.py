"""The one allocation path (`Allocator.plan`, which `allocate` runs) against known answers, and traced or
not: `allocate(..., explain=True)` collects the candidate trace through the same path, and gives the same
decision as `explain=False` (which the service runs without the full trace and the simulator for every
order).

The known answers (allocation_answers.json) are the plans of seeded orders, the candidate trace of each
pinned by a digest; they were recorded before the allocator's traced and untraced paths became one, and are
written again only for an intended change of the decisions: `python tests/unit/domain/test_allocation_paths.py`.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.allocation import (
    CACHE_LIMIT,
    UNLIMITED,
    AllocationPlan,
    AllocationPolicy,
    Allocator,
    Destination,
    Fulfillment,
    Location,
    Network,
    OrderLine,
    allocate,
)

TYPES = ("store", "dc", "dark_store")
RANKINGS = (
    ["fewest_splits", "distance"],
    ["distance"],
    ["distance", "fewest_splits"],
    ["stock_level", "distance"],
    ["priority", "distance"],
    ["fewest_splits", "stock_level"],
    ["fewest_splits", "distance", "priority"],
    ["fewest_splits", "stock_level", "distance"],
    ["fewest_splits", "priority", "distance"],
)


def _without_trace(plan: AllocationPlan) -> list[tuple[Any, ...]]:
    return [
        (line.sku, line.qty, line.picks, line.unallocated, line.combinations_searched, line.note)
        for line in plan.lines
    ]


def _locations(rng: random.Random, size: int) -> list[Location]:
    locations = []
    for i in range(size):
        caps = frozenset(c for c in ("pickup", "ship_from_store") if rng.random() < 0.6)
        capacity = rng.choice([None, None, None, 0, 1, 3, 10, 200])
        # a coarse grid makes equal distances, so the tie-breaks are exercised too
        lat, lon = 52 + rng.randrange(4) / 4, 13 + rng.randrange(4) / 4
        locations.append(
            Location(f"L{i:03d}", rng.choice(TYPES), rng.choice(["n", "s"]), lat, lon, caps, capacity,
                     rng.choice([10, 50, 100]))
        )  # fmt: skip
    return locations


def _policy(rng: random.Random) -> AllocationPolicy:
    return AllocationPolicy.from_result(
        {
            "eligible_location_types": rng.sample(TYPES, rng.randint(1, 3)),
            "floors": {t: rng.randint(0, 3) for t in TYPES if rng.random() < 0.5},
            "ranking": rng.choice(RANKINGS),
            "max_splits": rng.randint(1, 4),
            "max_distance_km": rng.choice([None, None, 40.0, 80.0]),
            "allow_partial": rng.random() < 0.5,
        }
    )


ANSWERS = Path(__file__).with_name("allocation_answers.json")
SEEDS = 40
ORDERS_PER_SEED = 40


def _seeded_orders(seed: int) -> list[dict[str, Any]]:
    """The orders of one seed: random networks, stock, thresholds, policies and pool sizes."""
    rng = random.Random(seed)
    locations = _locations(rng, rng.choice([3, 12, 20, 60, 124]))
    skus = [f"S{i}" for i in range(5)]
    pool_size = rng.choice([12, 12, 6, 2, 0])
    out = []
    for _ in range(ORDERS_PER_SEED):
        depth = rng.choice([[0, 0, 1, 2, 3, 5, 9, 30], [0, 4, 20, 25, 800], [1, 2, 3], [0, 0, 0, 1]])
        stock = {sku: {loc.id: rng.choice(depth) for loc in locations if rng.random() < 0.9} for sku in skus}
        low = None
        if rng.random() < 0.5:
            low = {sku: {loc.id: rng.choice([0, 0, 2, 4, 30]) for loc in locations} for sku in skus}
        lines = [
            OrderLine(s, rng.choice([1, 1, 2, 3, 7, 40])) for s in rng.choices(skus, k=rng.randint(1, 3))
        ]
        kind = rng.choice(["ship", "ship", "pickup", "ship_from_store"])
        fulfillment = Fulfillment(kind, rng.choice(locations).id if kind == "pickup" else None)
        destination = Destination(52 + rng.randrange(5) / 4, 13 + rng.randrange(5) / 4)
        policy = _policy(rng)
        out.append(
            {
                "args": (lines, locations, stock, policy, fulfillment, destination),
                "low": low,
                "pool_size": pool_size,
            }
        )
    return out


def _answer(plan: AllocationPlan) -> list[Any]:
    """A plan as the known answers hold it: the decision, and a digest of the candidate trace."""
    out: list[Any] = []
    for line in plan.lines:
        trace = json.dumps([c.to_dict() for c in line.candidates], sort_keys=True)
        out.append(
            [
                line.sku,
                line.qty,
                [[p.location, p.qty] for p in line.picks],
                line.unallocated,
                line.combinations_searched,
                line.note,
                hashlib.sha256(trace.encode()).hexdigest()[:16],
            ]
        )
    return out


def _answers() -> dict[str, list[list[Any]]]:
    return {
        str(seed): [
            _answer(allocate(*o["args"], low_stock_thresholds=o["low"], pool_size=o["pool_size"]))
            for o in _seeded_orders(seed)
        ]
        for seed in range(SEEDS)
    }


@pytest.mark.parametrize("seed", range(SEEDS))
def test_the_allocator_gives_the_known_answers(seed: int) -> None:
    known = json.loads(ANSWERS.read_text())[str(seed)]
    for o, answer in zip(_seeded_orders(seed), known, strict=True):
        traced = allocate(*o["args"], low_stock_thresholds=o["low"], pool_size=o["pool_size"], explain=True)
        assert _answer(traced) == answer
        untraced = allocate(
            *o["args"], low_stock_thresholds=o["low"], pool_size=o["pool_size"], explain=False
        )
        assert _without_trace(untraced) == _without_trace(traced)
        assert all(not line.candidates for line in untraced.lines)


@st.composite
def orders(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 30))
    locations = [
        Location(
            f"L{i}",
            draw(st.sampled_from(TYPES)),
            "r",
            52.0 + draw(st.sampled_from([0.0, 0.5, 1.0, 1.5])),
            draw(st.sampled_from([0.0, 0.5, 1.0])),
            frozenset(draw(st.sets(st.sampled_from(("ship_from_store", "pickup"))))),
            draw(st.none() | st.integers(-1, 30)),
            draw(st.integers(1, 3)),
        )
        for i in range(n)
    ]
    skus = ("A", "B")
    stock = {
        sku: {loc.id: draw(st.integers(-3, 40)) for loc in locations if draw(st.booleans())} for sku in skus
    }
    low = draw(
        st.none() | st.just({sku: {loc.id: draw(st.integers(0, 8)) for loc in locations} for sku in skus})
    )
    result = {
        "eligible_location_types": draw(st.lists(st.sampled_from(TYPES), min_size=1, unique=True)),
        "floors": {t: draw(st.integers(0, 6)) for t in TYPES},
        "ranking": draw(st.sampled_from(RANKINGS)),
        "max_splits": draw(st.integers(1, 4)),
        "max_distance_km": draw(st.none() | st.floats(10, 400)),
        "allow_partial": draw(st.booleans()),
    }
    lines = [
        OrderLine(draw(st.sampled_from(skus)), draw(st.integers(1, 40)))
        for _ in range(draw(st.integers(1, 3)))
    ]
    kind = draw(st.sampled_from(("ship", "ship_from_store", "pickup")))
    fulfillment = Fulfillment(
        kind, draw(st.sampled_from([loc.id for loc in locations])) if kind == "pickup" else None
    )
    return {
        "args": (
            lines,
            locations,
            stock,
            AllocationPolicy.from_result(result),
            fulfillment,
            Destination(52.5, 0.5),
        ),
        "low": low,
        "pool_size": draw(st.integers(0, 12)),
    }


@settings(max_examples=150, deadline=None)
@given(orders())
def test_the_traced_and_untraced_allocations_agree_on_generated_orders(o: dict[str, Any]) -> None:
    traced = allocate(*o["args"], low_stock_thresholds=o["low"], pool_size=o["pool_size"], explain=True)
    fast = allocate(*o["args"], low_stock_thresholds=o["low"], pool_size=o["pool_size"], explain=False)
    assert _without_trace(fast) == _without_trace(traced)


def test_an_allocator_kept_across_orders_plans_each_order_as_allocate_does() -> None:
    """The simulator keeps one `Allocator` per run (its caches per destination and policy live across
    orders) and passes live stock and capacity as arrays."""
    rng = random.Random(7)
    locations = _locations(rng, 60)
    for i, loc in enumerate(locations):
        locations[i] = Location(
            loc.id, loc.type, loc.region, loc.lat, loc.lon, loc.capabilities, None, loc.priority
        )
    network = Network(locations)
    capped = [i for i in range(len(locations)) if i % 3 == 0]
    allocator = Allocator(network, capped)
    skus = ["A", "B", "C"]
    available = [[rng.choice([0, 1, 3, 6, 20, 500]) for _ in locations] for _ in skus]
    capacity = [rng.choice([0, 2, 50]) if i in capped else UNLIMITED for i in range(len(locations))]
    policies = [_policy(rng) for _ in range(4)]
    for _ in range(400):
        policy = rng.choice(policies)
        lines = [(rng.randrange(3), rng.choice([1, 1, 2, 5])) for _ in range(rng.randint(1, 3))]
        kind = rng.choice(["ship", "ship", "pickup", "ship_from_store"])
        pickup = rng.randrange(len(locations)) if kind == "pickup" else -1
        lat, lon = 52 + rng.randrange(3) / 4, 13 + rng.randrange(3) / 4
        got = allocator.plan(lines, available, capacity, policy, kind, pickup, lat, lon)
        with_capacity = [
            Location(loc.id, loc.type, loc.region, loc.lat, loc.lon, loc.capabilities,
                     None if capacity[i] >= UNLIMITED else capacity[i], loc.priority)
            for i, loc in enumerate(locations)
        ]  # fmt: skip
        plan = allocate(
            [OrderLine(skus[s], q) for s, q in lines],
            with_capacity,
            {skus[s]: dict(zip(network.ids, available[s], strict=True)) for s in range(3)},
            policy,
            Fulfillment(kind, network.ids[pickup] if kind == "pickup" else None),
            Destination(lat, lon),
        )
        assert got == [[(network.index[p.location], p.qty) for p in line.picks] for line in plan.lines]
        # take what was planned, as a run does, so that stock and capacity run down
        for (s, _), line_picks in zip(lines, got, strict=True):
            for loc, q in line_picks:
                available[s][loc] -= q
                capacity[loc] -= q


def test_the_caches_stay_bounded_when_every_order_has_its_own_destination_and_policy() -> None:
    rng = random.Random(3)
    locations = _locations(rng, 5)
    network = Network(locations)
    allocator = Allocator(network)
    capacity = [UNLIMITED] * len(locations)
    available = [[rng.choice([0, 2, 9]) for _ in locations]]
    for i in range(CACHE_LIMIT + 500):
        policy = _policy(rng)  # a new policy object every order, as with the ruleset memo off
        lat, lon = 50 + i / 1000, 10 + rng.random()
        got = allocator.plan([(0, 1)], available, capacity, policy, "ship", -1, lat, lon)
        plan = allocate([OrderLine("A", 1)], [_unlimited(loc) for loc in locations],
                        {"A": dict(zip(network.ids, available[0], strict=True))}, policy, Fulfillment("ship"),
                        Destination(lat, lon))  # fmt: skip
        assert got == [[(network.index[p.location], p.qty) for p in line.picks] for line in plan.lines]
    assert sum(len(kept) for kept in allocator._static.values()) <= CACHE_LIMIT
    assert len(allocator._static) <= CACHE_LIMIT
    assert len(allocator._signatures) <= CACHE_LIMIT
    assert len(network._distances) <= CACHE_LIMIT


def _unlimited(loc: Location) -> Location:
    return Location(loc.id, loc.type, loc.region, loc.lat, loc.lon, loc.capabilities, None, loc.priority)


def test_an_allocator_tracking_the_stock_rows_plans_as_one_that_screens_every_candidate() -> None:
    """A run tells its allocator of every stock change (`Allocator.track`), which then walks each SKU's
    locations deepest first instead of screening every candidate: the picks and the combinations counted
    stay those of an allocator that screens every candidate."""
    rng = random.Random(11)
    locations = [_unlimited(loc) for loc in _locations(rng, 90)]
    network = Network(locations)
    capped = [i for i in range(len(locations)) if i % 4 == 0]
    tracking, screening = Allocator(network, capped), Allocator(network, capped)
    available = [[rng.choice([-1, 0, 1, 2, 3, 4, 6, 20, 500]) for _ in locations] for _ in range(3)]
    changed = tracking.track(available)
    capacity = [rng.choice([0, 2, 50]) if i in capped else UNLIMITED for i in range(len(locations))]
    policies = [_policy(rng) for _ in range(6)] + [
        AllocationPolicy.from_result(
            {"eligible_location_types": list(TYPES), "floors": {"store": 2, "dark_store": 1},
             "ranking": ["fewest_splits", "distance", "priority"], "max_splits": 3}
        )
    ]  # fmt: skip
    walked = 0
    for _ in range(1500):
        policy = rng.choice(policies)
        lines = [(rng.randrange(3), rng.choice([1, 1, 2, 5, 30])) for _ in range(rng.randint(1, 3))]
        kind = rng.choice(["ship", "ship", "ship", "pickup", "ship_from_store"])
        pickup = rng.randrange(len(locations)) if kind == "pickup" else -1
        lat, lon = 52 + rng.randrange(3) / 4, 13 + rng.randrange(3) / 4
        low = rng.choice([None, [[rng.choice([0, 0, 3, 8]) for _ in locations] for _ in lines]])
        searched: list[list[int]] = [[], []]
        got = [
            allocator.plan(lines, available, capacity, policy, kind, pickup, lat, lon, low, counted)
            for allocator, counted in zip((tracking, screening), searched, strict=True)
        ]
        assert got[0] == got[1]
        assert searched[0] == searched[1]
        walked += kind != "pickup" and policy.effective_ranking[1] != "stock_level"
        for (s, _), line_picks in zip(lines, got[0], strict=True):
            for loc, q in line_picks:
                available[s][loc] -= q
                capacity[loc] -= q
                changed((s, loc))
        # deliveries, sales and returns elsewhere
        for _ in range(rng.randint(0, 3)):
            s, loc = rng.randrange(3), rng.randrange(len(locations))
            available[s][loc] += rng.choice([-3, -1, 1, 2, 12, 300])
            changed((s, loc))
    assert walked > 500


if __name__ == "__main__":
    # one line per seed, so that a change of the answers shows as the seeds it touches
    rows = [
        f"{json.dumps(seed)}:{json.dumps(answers, separators=(',', ':'))}"
        for seed, answers in _answers().items()
    ]
    ANSWERS.write_text("{\n" + ",\n".join(rows) + "\n}\n")
