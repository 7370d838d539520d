"""Sourcing an order in a simulation run: the allocation decision of `service.domain.allocation`.

Two interchangeable implementations of one decision:
- `DomainSourcing` calls `service.domain.allocation.allocate` itself (with traces), the production code.
- `FastSourcing` makes the same choice (same screening, same bounded combination search, same scoring and
  tie-breaks, no traces) over integer-indexed arrays with the distances precomputed per destination, so
  that a run replays tens of thousands of orders per second. tests/unit/simulators/test_sourcing.py checks
  on generated networks, stock and policies that both give identical picks.

Both take the live (or stale) availability as `available[sku][location]` and return, per order line, the
`(location index, qty)` picks, or no picks at all when the policy refuses a partial allocation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from operator import itemgetter
from typing import Any

from service.domain.allocation import (
    MAX_COMBINATIONS,
    MAX_SEARCH_SPLITS,
    SEARCH_POOL_SIZE,
    AllocationPolicy,
    Destination,
    Fulfillment,
    Location,
    OrderLine,
    allocate,
    haversine_km,
)

Picks = list[list[tuple[int, int]]]  # per line: (location index, qty)
UNLIMITED = 1 << 62  # the remaining daily capacity of a location without a daily limit


class Network:
    """The locations of a run as the allocator sees them, with an index per location id."""

    def __init__(self, locations: Sequence[Location]) -> None:
        self.locations = list(locations)
        self.index = {loc.id: i for i, loc in enumerate(self.locations)}
        self.ids = [loc.id for loc in self.locations]
        self.types = [loc.type for loc in self.locations]
        self.priority = [loc.priority for loc in self.locations]
        self.pickup = [("pickup" in loc.capabilities) for loc in self.locations]
        self.sfs = [("ship_from_store" in loc.capabilities) for loc in self.locations]
        self._distances: dict[tuple[float, float], list[float]] = {}

    def distances(self, lat: float, lon: float) -> list[float]:
        """Kilometres from every location to a destination, computed once per destination."""
        key = (lat, lon)
        found = self._distances.get(key)
        if found is None:
            found = [haversine_km(loc.lat, loc.lon, lat, lon) for loc in self.locations]
            self._distances[key] = found
        return found


_DYNAMIC = ("fewest_splits", "stock_level")


class _Static:
    """The candidates of one (destination, policy, fulfillment, pickup) that pass the checks which do not
    depend on stock, in two orders: as listed (general search) and by the static part of the ranking key."""

    __slots__ = ("by_key", "by_rank", "fast", "has_capacity", "listed")

    def __init__(self, listed: list[tuple[int, float, int]], fast: bool, by_key: list[tuple[int, float, int]],
                 has_capacity: bool, by_rank: bool) -> None:  # fmt: skip
        self.listed = listed
        self.fast = fast
        # by_key: (location, distance, floor, -rank) in the order of the static part of the ranking key
        self.by_key = [(loc, d, floor, -rank) for rank, (loc, d, floor) in enumerate(by_key)]
        self.has_capacity = has_capacity
        # the only stock-dependent criterion is fewest_splits, so among single locations that each take
        # the whole line the static order decides
        self.by_rank = by_rank


class FastSourcing:
    """The domain allocator's choice, computed over arrays."""

    def __init__(self, network: Network, capped: Sequence[int] | None = None) -> None:
        """`capped`: the indexes of the locations that may have a daily capacity (None: any may)."""
        self.network = network
        self.capped = set(range(len(network.ids)) if capped is None else capped)
        self._static: dict[tuple[Any, ...], _Static] = {}
        # id(policy) -> what of the policy the static screening depends on; the policies are kept alive
        # so that an id is never reused while it is a key here
        self._signatures: dict[int, tuple[Any, ...]] = {}
        self._policies: list[AllocationPolicy] = []

    def _signature(self, policy: AllocationPolicy) -> tuple[Any, ...]:
        found = self._signatures.get(id(policy))
        if found is None:
            found = (
                tuple(sorted(policy.eligible_location_types)),
                tuple(sorted(policy.floors.items())),
                policy.max_distance_km,
                policy.effective_ranking,
            )
            self._signatures[id(policy)] = found
            self._policies.append(policy)
        return found

    def _candidates(
        self, policy: AllocationPolicy, fulfillment: str, pickup: int, lat: float, lon: float
    ) -> _Static:
        key = (lat, lon, self._signature(policy), fulfillment, pickup)
        found = self._static.get(key)
        if found is not None:
            return found
        net = self.network
        distances = net.distances(lat, lon)
        out: list[tuple[int, float, int]] = []
        for i in range(len(net.ids)):
            if net.types[i] not in policy.eligible_location_types:
                continue
            if fulfillment == "pickup":
                if i != pickup or not net.pickup[i]:
                    continue
            elif fulfillment == "ship_from_store" and not net.sfs[i]:
                continue
            if (
                fulfillment != "pickup"
                and policy.max_distance_km is not None
                and distances[i] > policy.max_distance_km
            ):
                continue
            out.append((i, distances[i], policy.floor_for(net.types[i])))
        ranking = policy.effective_ranking
        dynamic = [c in _DYNAMIC for c in ranking]
        # When every stock-dependent criterion comes before every static one, the ranking key is
        # (-giveable, static parts..., id): a stable sort by giveable of a list kept in static order.
        fast = dynamic == sorted(dynamic, reverse=True)
        static_criteria = [c for c in ranking if c not in _DYNAMIC]

        def static_key(item: tuple[int, float, int]) -> tuple[Any, ...]:
            loc, distance, _ = item
            parts: list[Any] = [distance if c == "distance" else net.priority[loc] for c in static_criteria]
            return (*parts, net.ids[loc])

        has_capacity = any(loc in self.capped for loc, _, _ in out)
        by_rank = fast and "stock_level" not in ranking
        entry = _Static(out, fast, sorted(out, key=static_key), has_capacity, by_rank)
        self._static[key] = entry
        return entry

    def plan(
        self,
        lines: Sequence[tuple[int, int]],
        available: Sequence[Sequence[int]],
        capacity: Sequence[int],
        policy: AllocationPolicy,
        fulfillment: str,
        pickup: int,
        lat: float,
        lon: float,
        thresholds: Sequence[Sequence[int]] | None = None,
    ) -> Picks:
        """Picks per line for `lines` of (sku index, qty); all lines empty when refused in full.

        `thresholds[i][location]` is the low-stock threshold of line i's SKU at a location for the order's
        channel: a location with less available than that gives nothing."""
        static = self._candidates(policy, fulfillment, pickup, lat, lon)
        ranking = policy.effective_ranking
        ids = self.network.ids
        priority = self.network.priority
        taken: dict[tuple[int, int], int] = {}
        cap_used: dict[int, int] = {}
        out: Picks = []
        complete = True
        for index, (sku, qty) in enumerate(lines):
            row = available[sku]
            low = thresholds[index] if thresholds is not None else None
            if static.fast and not any(key[0] == sku for key in taken):
                if static.has_capacity:
                    caps = capacity
                    if cap_used:
                        caps = list(capacity)
                        for loc, used in cap_used.items():
                            caps[loc] -= used
                    if low is None:
                        fast = [
                            (g if (g := a - floor) < c else c, rank, loc, d)
                            for loc, d, floor, rank in static.by_key
                            if (a := row[loc]) > floor and (c := caps[loc]) > 0
                        ]
                    else:
                        fast = [
                            (g if (g := a - floor) < c else c, rank, loc, d)
                            for loc, d, floor, rank in static.by_key
                            if (a := row[loc]) > floor and a >= low[loc] and (c := caps[loc]) > 0
                        ]
                elif low is None:
                    fast = [
                        (row[loc] - floor, rank, loc, d)
                        for loc, d, floor, rank in static.by_key
                        if row[loc] > floor
                    ]
                else:
                    fast = [
                        (a - floor, rank, loc, d)
                        for loc, d, floor, rank in static.by_key
                        if (a := row[loc]) > floor and a >= low[loc]
                    ]
                # giveable first, then -rank: deepest first, equal depths in static order
                fast.sort(reverse=True)
                picks = (
                    _choose_sorted(fast, qty, policy, ranking, priority, ids, static.by_rank) if fast else []
                )
            else:
                eligible: list[tuple[tuple[Any, ...], int, float, int]] = []  # (key, loc, distance, giveable)
                for loc, distance, floor in static.listed:
                    stock = row[loc]
                    if taken:
                        stock -= taken.get((sku, loc), 0)
                    if stock <= floor:  # covers no stock (floor >= 0) and below floor
                        continue
                    if low is not None and stock < low[loc]:
                        continue
                    giveable = stock - floor
                    cap = capacity[loc] - cap_used.get(loc, 0)
                    if cap <= 0:
                        continue
                    giveable = min(giveable, cap)
                    eligible.append(
                        (_key(ranking, distance, priority[loc], giveable, ids[loc]), loc, distance, giveable)
                    )
                picks = _choose(eligible, qty, policy, ranking, priority, ids) if eligible else []
            got = 0
            for loc, q in picks:
                got += q
                taken[(sku, loc)] = taken.get((sku, loc), 0) + q
                cap_used[loc] = cap_used.get(loc, 0) + q
            if got < qty:
                complete = False
            out.append(picks)
        if not complete and not policy.allow_partial:
            return [[] for _ in lines]
        return out


def _choose_sorted(
    eligible: list[tuple[int, int, int, float]],
    qty: int,
    policy: AllocationPolicy,
    ranking: Sequence[str],
    priority: Sequence[int],
    ids: Sequence[str],
    by_rank: bool,
) -> list[tuple[int, int]]:
    """The search of `_choose` for candidates (giveable, -rank, location, distance) already in key order,
    which is then also depth order."""
    max_k = min(policy.max_splits, len(eligible), MAX_SEARCH_SPLITS)
    sizes = list(range(1, max_k + 1))
    if ranking[0] == "fewest_splits":
        running = 0
        sizes = [max_k]
        for k in range(1, max_k + 1):
            running += eligible[k - 1][0]
            if running >= qty:
                sizes = [k]
                break
    m = max(sizes)
    n_extra = min(SEARCH_POOL_SIZE, len(eligible) - m)
    while n_extra > 0 and sum(math.comb(m + n_extra, k) for k in sizes) > MAX_COMBINATIONS:
        n_extra -= 1
    pool = eligible[: m + n_extra]
    if sizes == [1]:
        if pool[0][0] >= qty:
            # The deepest location covers the line, so the best single location is among those that
            # cover it (the pool's prefix, as it is in depth order), each taking exactly `qty`.
            pool = [c for c in pool if c[0] >= qty]
            if by_rank and qty & (qty - 1) == 0:
                # Scores are then the static criteria times qty / qty, exact for a power of two, so the
                # static order decides: the smallest rank, the largest -rank.
                best = max(pool, key=_second)
                return [(best[2], qty)]
        best_key: tuple[Any, ...] | None = None
        best_pick = (0, 0)
        for g, _, loc, d in pool:
            take = g if g < qty else qty
            parts: list[Any] = [-take]
            for criterion in ranking:
                if criterion == "fewest_splits":
                    parts.append(1.0)
                elif criterion == "distance":
                    parts.append(d * take / take)
                elif criterion == "priority":
                    parts.append(priority[loc] * take / take)
                else:
                    parts.append(-(g * take) / take)
            parts.append(ids[loc])
            key = tuple(parts)
            if best_key is None or key < best_key:
                best_key = key
                best_pick = (loc, take)
        return [best_pick]
    keyed = [((), loc, d, g) for g, _, loc, d in pool]
    return _search_pool(keyed, sizes, qty, ranking, priority, ids)


_second = itemgetter(1)


def _key(
    ranking: Sequence[str], distance: float, priority: int, giveable: int, loc_id: str
) -> tuple[Any, ...]:
    parts: list[Any] = []
    for criterion in ranking:
        if criterion == "distance":
            parts.append(distance)
        elif criterion == "priority":
            parts.append(priority)
        else:
            parts.append(-giveable)
    parts.append(loc_id)
    return tuple(parts)


def _choose(
    eligible: list[tuple[tuple[Any, ...], int, float, int]],
    qty: int,
    policy: AllocationPolicy,
    ranking: Sequence[str],
    priority: Sequence[int],
    ids: Sequence[str],
) -> list[tuple[int, int]]:
    """The bounded combination search of the domain allocator, on tuples."""
    eligible.sort(key=lambda c: c[0])
    max_k = min(policy.max_splits, len(eligible), MAX_SEARCH_SPLITS)
    deepest = sorted(eligible, key=lambda c: (-c[3], c[0]))
    sizes = list(range(1, max_k + 1))
    if ranking[0] == "fewest_splits":
        running = 0
        sizes = [max_k]
        for k in range(1, max_k + 1):
            running += deepest[k - 1][3]
            if running >= qty:
                sizes = [k]
                break
    must = deepest[: max(sizes)]
    must_ids = {c[1] for c in must}
    extra = [c for c in eligible if c[1] not in must_ids][:SEARCH_POOL_SIZE]
    while extra and sum(math.comb(len(must) + len(extra), k) for k in sizes) > MAX_COMBINATIONS:
        extra.pop()
    pool = sorted(must + extra, key=lambda c: c[0])
    return _search_pool(pool, sizes, qty, ranking, priority, ids)


def _search_pool(
    pool: list[tuple[tuple[Any, ...], int, float, int]],
    sizes: list[int],
    qty: int,
    ranking: Sequence[str],
    priority: Sequence[int],
    ids: Sequence[str],
) -> list[tuple[int, int]]:
    """Fill every combination of the pool in pool order and keep the best by the domain's score."""
    best: tuple[Any, ...] | None = None
    best_picks: list[tuple[int, int]] = []
    for k in sizes:
        for combo in combinations(pool, k):
            picks: list[tuple[int, int, float, int]] = []  # loc, qty, distance, giveable
            remaining = qty
            for _, loc, distance, giveable in combo:
                if remaining <= 0:
                    break
                take = giveable if giveable < remaining else remaining
                if take > 0:
                    picks.append((loc, take, distance, giveable))
                    remaining -= take
            allocated = qty - remaining
            units = allocated or 1
            score: list[float] = []
            for criterion in ranking:
                if criterion == "fewest_splits":
                    score.append(float(len(picks)))
                elif criterion == "distance":
                    score.append(sum(d * q for _, q, d, _ in picks) / units)
                elif criterion == "priority":
                    score.append(sum(priority[loc] * q for loc, q, _, _ in picks) / units)
                else:
                    score.append(-sum(g * q for _, q, _, g in picks) / units)
            key = (-allocated, *score, tuple(ids[loc] for loc, _, _, _ in picks))
            if best is None or key < best:
                best = key
                best_picks = [(loc, q) for loc, q, _, _ in picks]
    return best_picks


class DomainSourcing:
    """Calls the production allocator, `service.domain.allocation.allocate`, for every order."""

    def __init__(self, network: Network, sku_ids: Sequence[str]) -> None:
        self.network = network
        self.sku_ids = list(sku_ids)

    def plan(
        self,
        lines: Sequence[tuple[int, int]],
        available: Sequence[Sequence[int]],
        capacity: Sequence[int],
        policy: AllocationPolicy,
        fulfillment: str,
        pickup: int,
        lat: float,
        lon: float,
        thresholds: Sequence[Sequence[int]] | None = None,
    ) -> Picks:
        net = self.network
        sku_ids = self.sku_ids
        low: dict[str, dict[str, int]] | None = None
        if thresholds is not None:
            low = {}
            for (s, _), row in zip(lines, thresholds, strict=True):
                low[sku_ids[s]] = dict(zip(net.ids, row, strict=True))
        locations = [
            loc if capacity[i] >= UNLIMITED else _with_capacity(loc, capacity[i])
            for i, loc in enumerate(net.locations)
        ]
        stock = {sku_ids[s]: dict(zip(net.ids, available[s], strict=True)) for s, _ in lines}
        plan = allocate(
            [OrderLine(sku_ids[s], q) for s, q in lines],
            locations,
            stock,
            policy,
            Fulfillment(fulfillment, net.ids[pickup] if fulfillment == "pickup" else None),
            Destination(lat, lon),
            low_stock_thresholds=low,
        )
        return [[(net.index[p.location], p.qty) for p in line.picks] for line in plan.lines]


def _with_capacity(loc: Location, capacity: int | None) -> Location:
    return Location(loc.id, loc.type, loc.region, loc.lat, loc.lon, loc.capabilities, capacity, loc.priority)
