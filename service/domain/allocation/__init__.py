"""Channel-priority allocation: choose the locations that fulfil each order line.

Pure code. The allocation ruleset sets the policy (which location types may serve the channel, the floor
each type keeps back for higher-priority channels, the ranking, the split limit, the distance limit and
whether a partial allocation is acceptable); this package applies it to the candidate locations and their
available stock and says, per line, where the units come from, what is left unallocated and why every
candidate was used or dropped.

Search. For each line the allocator looks at combinations of up to `max_splits` locations. A combination
is filled in the order of its locations' own ranking and scored by the policy's ranking criteria in order;
`fewest_splits` is always one of them (put first when the ruleset leaves it out), so by default the fewest
splits win and the other criteria break ties. The search is bounded: it runs over a pool made of the
locations with the most giveable units (as many as the largest combination searched, so a coverage that
exists is never missed) plus the `pool_size` best others by the ranking, trimmed from the worst-ranked end
while the number of combinations would pass `MAX_COMBINATIONS`; combinations are at most
`MAX_SEARCH_SPLITS` locations. Candidates outside the pool are reported as such in the trace.

One implementation (`allocator.Allocator`) makes the choice, with or without the trace: the trace is
collected by the object passed to `Allocator.plan` (`trace.NO_TRACE` keeps nothing), and never changes the
choice. The package's modules, by idea: `model` (orders, locations, the policy, the plan), `candidates`
(eligibility and the reasons a location is dropped), `ranking` (location keys and combination scores),
`search` (the bounded search of one line), `depth` (tracked stock rows kept deepest first), `trace`
(trace collection) and `allocator` (the plan of an order).

Lines are served in the order given; stock and daily capacity taken by one line are not offered to the
next. Without `allow_partial`, an order that cannot be served in full gets nothing (all-or-nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from service.domain.allocation.allocator import DEPTH_WALK_FROM, Allocator, IndexedPicks
from service.domain.allocation.candidates import CACHE_LIMIT, UNLIMITED, Network
from service.domain.allocation.model import (
    DROP_BELOW_FLOOR,
    DROP_BELOW_LOW_STOCK,
    DROP_BEYOND_MAX_DISTANCE,
    DROP_INELIGIBLE_TYPE,
    DROP_NO_CAPABILITY,
    DROP_NO_CAPACITY,
    DROP_NO_STOCK,
    DROP_NOT_PICKUP_LOCATION,
    EARTH_RADIUS_KM,
    FULFILLMENT_TYPES,
    MAX_COMBINATIONS,
    MAX_SEARCH_SPLITS,
    RANKING_CRITERIA,
    SEARCH_POOL_SIZE,
    AllocationPlan,
    AllocationPolicy,
    CandidateTrace,
    Destination,
    Fulfillment,
    LineAllocation,
    Location,
    OrderLine,
    Pick,
    haversine_km,
)
from service.domain.allocation.trace import NO_TRACE, CandidateRecorder, NoTrace
from service.domain.errors import InvalidInput

__all__ = [
    "CACHE_LIMIT",
    "DEPTH_WALK_FROM",
    "DROP_BELOW_FLOOR",
    "DROP_BELOW_LOW_STOCK",
    "DROP_BEYOND_MAX_DISTANCE",
    "DROP_INELIGIBLE_TYPE",
    "DROP_NOT_PICKUP_LOCATION",
    "DROP_NO_CAPABILITY",
    "DROP_NO_CAPACITY",
    "DROP_NO_STOCK",
    "EARTH_RADIUS_KM",
    "FULFILLMENT_TYPES",
    "MAX_COMBINATIONS",
    "MAX_SEARCH_SPLITS",
    "NO_TRACE",
    "RANKING_CRITERIA",
    "SEARCH_POOL_SIZE",
    "UNLIMITED",
    "AllocationPlan",
    "AllocationPolicy",
    "Allocator",
    "CandidateRecorder",
    "CandidateTrace",
    "Destination",
    "Fulfillment",
    "IndexedPicks",
    "LineAllocation",
    "Location",
    "Network",
    "NoTrace",
    "OrderLine",
    "Pick",
    "allocate",
    "haversine_km",
    "plan_to_dict",
]

REFUSED_NOTE = "order not allocated: a line could not be served in full and partial is not allowed"
SHORT_NOTE = "not enough giveable stock within the policy"


def _validate(lines: Sequence[OrderLine], network: Network) -> None:
    if not lines:
        raise InvalidInput("lines", "an order needs at least one line")
    for i, line in enumerate(lines):
        if not line.sku:
            raise InvalidInput(f"lines[{i}].sku", "must not be empty")
        if isinstance(line.qty, bool) or line.qty < 1:
            raise InvalidInput(f"lines[{i}].qty", "must be a whole number >= 1")
    if network.repeated is not None:
        raise InvalidInput("locations", f"location {network.repeated!r} is listed twice")


def allocate(
    lines: Sequence[OrderLine],
    locations: Sequence[Location],
    stock: Mapping[str, Mapping[str, int]],
    policy: AllocationPolicy,
    fulfillment: Fulfillment,
    destination: Destination,
    *,
    low_stock_thresholds: Mapping[str, Mapping[str, int]] | None = None,
    capacity_used: Mapping[str, int] | None = None,
    pool_size: int = SEARCH_POOL_SIZE,
    explain: bool = True,
    allocator: Allocator | None = None,
) -> AllocationPlan:
    """Allocate every line of an order. `stock` maps sku -> location id -> available units;
    `low_stock_thresholds` (sku -> location id -> units) stops a location giving anything while its
    available stock is below the threshold, as channel availability does; `capacity_used` (location id
    -> units) is what other orders already took of a location's `capacity_remaining` today. `allocator`:
    one made by `Allocator.over(locations)` and kept by the caller for later orders on the same locations
    (the service keeps one per master data snapshot), so that what it works out once serves them all.

    With `explain` the lines carry the trace of every candidate (the full trace shows it), collected by a
    `CandidateRecorder`; without it nothing is collected. The choice is the same."""
    if allocator is None or allocator.pool_size != pool_size:
        allocator = Allocator.over(locations, pool_size)
    network, capacity = allocator.network, allocator.capacity
    # the locations are checked once per network (an allocator kept for them answers for them)
    _validate(lines, network if network.given is locations else Network(locations))
    if capacity_used:
        capacity = list(capacity)
        for location, n in capacity_used.items():
            i = network.index.get(location)
            if i is not None and capacity[i] != UNLIMITED:
                capacity[i] = max(0, capacity[i] - n)
    sku_index: dict[str, int] = {}
    available: list[list[int]] = []
    for line in lines:
        if line.sku not in sku_index:
            sku_index[line.sku] = len(available)
            sku_stock = stock.get(line.sku, {})
            available.append(list(map(sku_stock.get, network.ids, network.zeros)))
    thresholds: list[Sequence[int] | None] | None = None
    if low_stock_thresholds:
        thresholds = []
        for line in lines:
            sku_low = low_stock_thresholds.get(line.sku)
            thresholds.append(list(map(sku_low.get, network.ids, network.zeros)) if sku_low else None)
    pickup = network.index.get(fulfillment.pickup_location or "", -1)
    recorder = None
    if explain:
        recorder = CandidateRecorder(
            network, policy, fulfillment.type, pickup, destination.lat, destination.lon
        )
    searched: list[int] = []
    picks = allocator.plan(
        [(sku_index[line.sku], line.qty) for line in lines],
        available,
        capacity,
        policy,
        fulfillment.type,
        pickup,
        destination.lat,
        destination.lon,
        thresholds,
        searched,
        NO_TRACE if recorder is None else recorder,
    )
    refused = not policy.allow_partial and any(
        sum(q for _, q in line_picks) < line.qty for line, line_picks in zip(lines, picks, strict=True)
    )
    results: list[LineAllocation] = []
    for i, (line, line_picks, tried) in enumerate(zip(lines, picks, searched, strict=True)):
        allocated = sum(q for _, q in line_picks)
        candidates: tuple[CandidateTrace, ...] = ()
        if recorder is not None:
            candidates = recorder.lines[i]
            if refused:  # all-or-nothing: the trace keeps what was tried, nothing is chosen
                candidates = tuple(_not_chosen(c) for c in candidates)
        results.append(
            LineAllocation(
                sku=line.sku,
                qty=line.qty,
                picks=tuple(Pick(network.ids[loc], q) for loc, q in line_picks),
                unallocated=line.qty - allocated,
                candidates=candidates,
                combinations_searched=tried,
                note=REFUSED_NOTE if refused else None if allocated == line.qty else SHORT_NOTE,
            )
        )
    return AllocationPlan(tuple(results))


def _not_chosen(c: CandidateTrace) -> CandidateTrace:
    if c.status != "chosen":
        return c
    return CandidateTrace(
        c.location, c.type, c.distance_km, c.available, c.floor, c.giveable, "not_chosen", c.reason, c.score
    )


def plan_to_dict(plan: AllocationPlan, *, with_candidates: bool) -> dict[str, Any]:
    """JSON-ready view of a plan; candidates only for the full trace."""
    lines: list[dict[str, Any]] = []
    for line in plan.lines:
        item: dict[str, Any] = {
            "sku": line.sku,
            "qty": line.qty,
            "allocations": [{"location": p.location, "qty": p.qty} for p in line.picks],
            "unallocated": line.unallocated,
        }
        if line.note:
            item["note"] = line.note
        if with_candidates:
            item["combinations_searched"] = line.combinations_searched
            item["candidates"] = [c.to_dict() for c in line.candidates]
        lines.append(item)
    return {"complete": plan.complete, "splits": plan.splits, "lines": lines}
