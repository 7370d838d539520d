"""The simulator's fast sourcing makes the same choices as the production allocator."""

from __future__ import annotations

import random

import pytest

from service.domain.allocation import AllocationPolicy, Location
from simulators.sourcing import UNLIMITED, DomainSourcing, FastSourcing, Network

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
)


def _network(rng: random.Random, size: int) -> Network:
    locations = []
    for i in range(size):
        caps = frozenset(c for c in ("pickup", "ship_from_store") if rng.random() < 0.6)
        capacity = rng.choice([None, None, None, 0, 1, 3, 10])
        locations.append(
            Location(f"L{i:03d}", rng.choice(TYPES), rng.choice(["n", "s"]), 52 + rng.random(),
                     13 + rng.random(), caps, capacity, rng.choice([10, 50, 100]))
        )  # fmt: skip
    return Network(locations)


def _policy(rng: random.Random) -> AllocationPolicy:
    return AllocationPolicy.from_result(
        {
            "eligible_location_types": rng.sample(TYPES, rng.randint(1, 3)),
            "floors": {t: rng.randint(0, 3) for t in TYPES if rng.random() < 0.5},
            "ranking": rng.choice(RANKINGS),
            "max_splits": rng.randint(1, 4),
            "max_distance_km": rng.choice([None, 40.0, 80.0]),
            "allow_partial": rng.random() < 0.5,
        }
    )


@pytest.mark.parametrize("seed", range(24))
def test_fast_sourcing_picks_what_the_domain_allocator_picks(seed: int) -> None:
    rng = random.Random(seed)
    network = _network(rng, rng.choice([5, 20, 60]))
    skus = [f"S{i}" for i in range(6)]
    fast = FastSourcing(network)
    domain = DomainSourcing(network, skus)
    capacity = [UNLIMITED if c is None else c for c in (loc.capacity_remaining for loc in network.locations)]
    for _ in range(60):
        available = [[rng.choice([0, 0, 1, 2, 3, 5, 9, 30]) for _ in network.locations] for _ in skus]
        policy = _policy(rng)
        lines = [(s, rng.choice([1, 1, 2, 3, 7])) for s in rng.sample(range(len(skus)), rng.randint(1, 3))]
        fulfillment = rng.choice(["ship", "ship", "pickup", "ship_from_store"])
        pickup = rng.randrange(len(network.ids))
        lat, lon = 52 + rng.random(), 13 + rng.random()
        thresholds = None
        if rng.random() < 0.5:
            thresholds = [[rng.choice([0, 0, 0, 2, 4]) for _ in network.ids] for _ in lines]
        expected = domain.plan(lines, available, capacity, policy, fulfillment, pickup, lat, lon, thresholds)
        got = fast.plan(lines, available, capacity, policy, fulfillment, pickup, lat, lon, thresholds)
        assert got == expected
