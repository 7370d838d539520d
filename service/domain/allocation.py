"""Channel-priority allocation: choose the locations that fulfil each order line.

Pure code. The allocation ruleset sets the policy (which location types may serve the channel, the floor
each type keeps back for higher-priority channels, the ranking, the split limit, the distance limit and
whether a partial allocation is acceptable); this module applies it to the candidate locations and their
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

Lines are served in the order given; stock and daily capacity taken by one line are not offered to the
next. Without `allow_partial`, an order that cannot be served in full gets nothing (all-or-nothing).
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from heapq import heappush, heapreplace
from itertools import combinations
from operator import itemgetter
from typing import Any

from service.domain.errors import InvalidInput, PolicyError

RANKING_CRITERIA = ("fewest_splits", "distance", "priority", "stock_level")
FULFILLMENT_TYPES = ("ship", "pickup", "ship_from_store")
SEARCH_POOL_SIZE = 12
MAX_COMBINATIONS = 4096
MAX_SEARCH_SPLITS = 12
EARTH_RADIUS_KM = 6371.0088

# Reasons a candidate location is dropped for a line, in the order they are checked.
DROP_INELIGIBLE_TYPE = "ineligible_type"
DROP_NOT_PICKUP_LOCATION = "not_pickup_location"
DROP_NO_CAPABILITY = "no_capability"
DROP_BEYOND_MAX_DISTANCE = "beyond_max_distance"
DROP_NO_STOCK = "no_stock"
DROP_BELOW_FLOOR = "below_floor"
DROP_BELOW_LOW_STOCK = "below_low_stock_threshold"
DROP_NO_CAPACITY = "no_capacity"


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres between two points given in degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True, slots=True)
class Destination:
    lat: float
    lon: float
    region: str = ""


@dataclass(frozen=True, slots=True)
class Location:
    """A candidate location. `priority`: lower is preferred. `capacity_remaining`: units it can still
    dispatch today (None: no daily limit)."""

    id: str
    type: str
    region: str
    lat: float
    lon: float
    capabilities: frozenset[str] = frozenset()
    capacity_remaining: int | None = None
    priority: int = 100


@dataclass(frozen=True, slots=True)
class OrderLine:
    sku: str
    qty: int


@dataclass(frozen=True, slots=True)
class Fulfillment:
    type: str
    pickup_location: str | None = None

    def __post_init__(self) -> None:
        if self.type not in FULFILLMENT_TYPES:
            raise InvalidInput("fulfillment", f"expected one of {', '.join(FULFILLMENT_TYPES)}")
        if self.type == "pickup" and not self.pickup_location:
            raise InvalidInput("pickup_location", "required when fulfillment is pickup")


@dataclass(frozen=True, slots=True)
class AllocationPolicy:
    """What the allocation ruleset decided for this order."""

    eligible_location_types: frozenset[str]
    floors: Mapping[str, int] = field(default_factory=dict)
    ranking: tuple[str, ...] = ("fewest_splits", "distance")
    max_splits: int = 1
    max_distance_km: float | None = None
    allow_partial: bool = False
    reservation_ttl_seconds: int = 900
    # what the policy says, hashable (the floors sorted), and its hash: equal policies are one cache key
    _value: tuple[Any, ...] = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        value = (
            tuple(sorted(self.eligible_location_types)),
            tuple(sorted(self.floors.items())),
            self.ranking,
            self.max_splits,
            self.max_distance_km,
            self.allow_partial,
            self.reservation_ttl_seconds,
        )
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "_hash", hash(value))

    def __hash__(self) -> int:
        return self._hash

    def floor_for(self, location_type: str) -> int:
        """The units a location of this type keeps back from the channel (0 when the ruleset sets none)."""
        return self.floors.get(location_type, 0)

    @property
    def effective_ranking(self) -> tuple[str, ...]:
        """The ranking used to score combinations: `fewest_splits` first unless the ruleset placed it."""
        if "fewest_splits" in self.ranking:
            return self.ranking
        return ("fewest_splits", *self.ranking)

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> AllocationPolicy:
        """Build the policy from an allocation ruleset result, refusing values the allocator cannot use."""
        types = result.get("eligible_location_types")
        if not isinstance(types, list | tuple) or not all(isinstance(t, str) for t in types):
            raise PolicyError("eligible_location_types", "expected a list of location types")
        floors_raw = result.get("floors", {})
        if not isinstance(floors_raw, Mapping):
            raise PolicyError("floors", "expected a mapping of location type to units")
        floors: dict[str, int] = {}
        for key, value in floors_raw.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise PolicyError("floors", f"floor for {key!r} must be a number of units >= 0")
            floors[str(key)] = math.ceil(value)
        ranking_raw = result.get("ranking", ["fewest_splits", "distance"])
        if not isinstance(ranking_raw, list | tuple) or not ranking_raw:
            raise PolicyError("ranking", f"expected a non-empty list of {', '.join(RANKING_CRITERIA)}")
        for criterion in ranking_raw:
            if criterion not in RANKING_CRITERIA:
                raise PolicyError("ranking", f"unknown criterion {criterion!r}")
        if len(set(ranking_raw)) != len(ranking_raw):
            raise PolicyError("ranking", "a criterion appears twice")
        max_splits = result.get("max_splits", 1)
        if isinstance(max_splits, bool) or not isinstance(max_splits, int) or max_splits < 1:
            raise PolicyError("max_splits", "expected a whole number >= 1")
        max_distance = result.get("max_distance_km")
        if max_distance is not None and (
            isinstance(max_distance, bool) or not isinstance(max_distance, int | float) or max_distance < 0
        ):
            raise PolicyError("max_distance_km", "expected a distance >= 0")
        allow_partial = result.get("allow_partial", False)
        if not isinstance(allow_partial, bool):
            raise PolicyError("allow_partial", "expected true or false")
        ttl = result.get("reservation_ttl_seconds", 900)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise PolicyError("reservation_ttl_seconds", "expected a whole number of seconds >= 1")
        return cls(
            eligible_location_types=frozenset(types),
            floors=floors,
            ranking=tuple(str(c) for c in ranking_raw),
            max_splits=max_splits,
            max_distance_km=None if max_distance is None else float(max_distance),
            allow_partial=allow_partial,
            reservation_ttl_seconds=ttl,
        )


@dataclass(frozen=True, slots=True)
class Pick:
    location: str
    qty: int


@dataclass(frozen=True, slots=True)
class CandidateTrace:
    """Why one location was or was not used for one line. `status`: chosen, not_chosen,
    outside_search_pool or dropped (then `reason` says why)."""

    location: str
    type: str
    distance_km: float
    available: int
    floor: int
    giveable: int
    status: str
    reason: str | None = None
    score: Mapping[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "location": self.location,
            "type": self.type,
            "distance_km": round(self.distance_km, 3),
            "available": self.available,
            "floor": self.floor,
            "giveable": self.giveable,
            "status": self.status,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        if self.score is not None:
            out["score"] = {k: round(v, 3) for k, v in self.score.items()}
        return out


@dataclass(frozen=True, slots=True)
class LineAllocation:
    sku: str
    qty: int
    picks: tuple[Pick, ...]
    unallocated: int
    candidates: tuple[CandidateTrace, ...]
    combinations_searched: int = 0
    note: str | None = None

    @property
    def allocated(self) -> int:
        return sum(p.qty for p in self.picks)


@dataclass(frozen=True, slots=True)
class AllocationPlan:
    lines: tuple[LineAllocation, ...]

    @property
    def complete(self) -> bool:
        return all(line.unallocated == 0 for line in self.lines)

    @property
    def splits(self) -> int:
        """Distinct locations the order ships from."""
        return len({p.location for line in self.lines for p in line.picks})

    @property
    def unallocated(self) -> int:
        return sum(line.unallocated for line in self.lines)


@dataclass(slots=True)
class _Candidate:
    location: Location
    distance_km: float
    available: int
    floor: int
    giveable: int
    key: tuple[Any, ...] = ()


def _location_key(c: _Candidate, ranking: Sequence[str]) -> tuple[Any, ...]:
    """How good one location is on its own, by the ranking; the id keeps the order deterministic."""
    parts: list[Any] = []
    for criterion in ranking:
        if criterion == "distance":
            parts.append(c.distance_km)
        elif criterion == "priority":
            parts.append(c.location.priority)
        else:  # fewest_splits and stock_level both favour the deepest location
            parts.append(-c.giveable)
    parts.append(c.location.id)
    return tuple(parts)


def _score(picks: Sequence[tuple[_Candidate, int]], ranking: Sequence[str]) -> tuple[float, ...]:
    """Score a filled combination, one value per ranking criterion, lower is better: the number of
    locations, and unit-weighted means of distance, priority and (negated) giveable depth."""
    if len(picks) == 1:
        # one location: the means are its own values (the common case, kept cheap)
        c = picks[0][0]
        return tuple(
            1.0
            if criterion == "fewest_splits"
            else c.distance_km
            if criterion == "distance"
            else float(c.location.priority)
            if criterion == "priority"
            else -float(c.giveable)
            for criterion in ranking
        )
    units = sum(q for _, q in picks) or 1
    out: list[float] = []
    for criterion in ranking:
        if criterion == "fewest_splits":
            out.append(float(len(picks)))
        elif criterion == "distance":
            out.append(sum(c.distance_km * q for c, q in picks) / units)
        elif criterion == "priority":
            out.append(sum(c.location.priority * q for c, q in picks) / units)
        else:
            # deeper stock is better: the negated unit-weighted giveable depth sorts it first
            out.append(-sum(c.giveable * q for c, q in picks) / units)
    return tuple(out)


def _fill(combo: Sequence[_Candidate], qty: int) -> list[tuple[_Candidate, int]]:
    picks: list[tuple[_Candidate, int]] = []
    remaining = qty
    for cand in combo:
        if remaining <= 0:
            break
        take = min(cand.giveable, remaining)
        if take > 0:
            picks.append((cand, take))
            remaining -= take
    return picks


def _search(
    eligible: list[_Candidate], qty: int, policy: AllocationPolicy, pool_size: int
) -> tuple[list[tuple[_Candidate, int]], set[str], int]:
    """Best filled combination over the bounded pool; returns (picks, pool ids, combinations tried)."""
    ranking = policy.effective_ranking
    max_k = min(policy.max_splits, len(eligible), MAX_SEARCH_SPLITS)
    deepest = sorted(eligible, key=lambda c: (-c.giveable, c.key))
    sizes: list[int] = list(range(1, max_k + 1))
    if ranking[0] == "fewest_splits":
        # when fewest splits decide first, only the smallest covering size needs searching
        running = 0
        sizes = [max_k]
        for k in range(1, max_k + 1):
            running += deepest[k - 1].giveable
            if running >= qty:
                sizes = [k]
                break
    # the deepest locations are always in the pool, so a coverage that exists is never missed
    must = deepest[: max(sizes)]
    must_ids = {c.location.id for c in must}
    extra = [c for c in eligible if c.location.id not in must_ids][:pool_size]
    while extra and sum(math.comb(len(must) + len(extra), k) for k in sizes) > MAX_COMBINATIONS:
        extra.pop()
    pool = sorted(must + extra, key=lambda c: c.key)
    best: tuple[Any, ...] | None = None
    best_picks: list[tuple[_Candidate, int]] = []
    searched = 0
    for k in sizes:
        for combo in combinations(pool, k):
            searched += 1
            picks = _fill(combo, qty)
            allocated = sum(q for _, q in picks)
            score = _score(picks, ranking)
            key = (-allocated, *score, tuple(c.location.id for c, _ in picks))
            if best is None or key < best:
                best, best_picks = key, picks
    return best_picks, {c.location.id for c in pool}, searched


def _screen(
    loc: Location,
    available: int | None,
    capacity_left: int | None,
    policy: AllocationPolicy,
    fulfillment: Fulfillment,
    distance_km: float,
    low_stock_threshold: int,
) -> tuple[str | None, int, int]:
    """Return (drop reason or None, floor, giveable units) for one location and line."""
    floor = policy.floor_for(loc.type)
    stock = max(0, available or 0)
    giveable = max(0, stock - floor)
    if capacity_left is not None:
        giveable = min(giveable, max(0, capacity_left))
    if loc.type not in policy.eligible_location_types:
        return DROP_INELIGIBLE_TYPE, floor, 0
    if fulfillment.type == "pickup":
        if loc.id != fulfillment.pickup_location:
            return DROP_NOT_PICKUP_LOCATION, floor, 0
        if "pickup" not in loc.capabilities:
            return DROP_NO_CAPABILITY, floor, 0
    elif fulfillment.type == "ship_from_store" and "ship_from_store" not in loc.capabilities:
        return DROP_NO_CAPABILITY, floor, 0
    # a pickup customer travels to the store they chose, so distance limits apply to shipments only
    if (
        fulfillment.type != "pickup"
        and policy.max_distance_km is not None
        and distance_km > policy.max_distance_km
    ):
        return DROP_BEYOND_MAX_DISTANCE, floor, 0
    if stock <= 0:
        return DROP_NO_STOCK, floor, 0
    if stock <= floor:
        return DROP_BELOW_FLOOR, floor, 0
    if stock < low_stock_threshold:
        return DROP_BELOW_LOW_STOCK, floor, 0
    if capacity_left is not None and capacity_left <= 0:
        return DROP_NO_CAPACITY, floor, 0
    return None, floor, giveable


def _validate(lines: Sequence[OrderLine], locations: Sequence[Location]) -> None:
    if not lines:
        raise InvalidInput("lines", "an order needs at least one line")
    for i, line in enumerate(lines):
        if not line.sku:
            raise InvalidInput(f"lines[{i}].sku", "must not be empty")
        if isinstance(line.qty, bool) or line.qty < 1:
            raise InvalidInput(f"lines[{i}].qty", "must be a whole number >= 1")
    seen: set[str] = set()
    for loc in locations:
        if loc.id in seen:
            raise InvalidInput("locations", f"location {loc.id!r} is listed twice")
        seen.add(loc.id)


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

    With `explain` the lines carry the trace of every candidate (the full trace shows it); without it the
    same choice is made by `Allocator`, over arrays and without building the trace. Both give the same
    plan apart from `candidates` (tests/unit/domain/test_allocation_paths.py)."""
    _validate(lines, locations)
    used = capacity_used or {}
    if not explain:
        return _allocate_indexed(
            lines,
            locations,
            stock,
            policy,
            fulfillment,
            destination,
            low_stock_thresholds,
            used,
            pool_size,
            allocator,
        )
    return _allocate_traced(
        lines, locations, stock, policy, fulfillment, destination, low_stock_thresholds, used, pool_size
    )


def _allocate_traced(
    lines: Sequence[OrderLine],
    locations: Sequence[Location],
    stock: Mapping[str, Mapping[str, int]],
    policy: AllocationPolicy,
    fulfillment: Fulfillment,
    destination: Destination,
    low_stock_thresholds: Mapping[str, Mapping[str, int]] | None,
    capacity_used: Mapping[str, int],
    pool_size: int,
) -> AllocationPlan:
    """The allocator with the per-candidate trace."""
    distances = {
        loc.id: haversine_km(loc.lat, loc.lon, destination.lat, destination.lon) for loc in locations
    }
    capacity: dict[str, int | None] = {
        loc.id: None
        if loc.capacity_remaining is None
        else max(0, loc.capacity_remaining - capacity_used.get(loc.id, 0))
        for loc in locations
    }
    taken: dict[tuple[str, str], int] = {}
    ranking = policy.effective_ranking
    results: list[LineAllocation] = []
    for line in lines:
        sku_stock = stock.get(line.sku, {})
        sku_thresholds = (low_stock_thresholds or {}).get(line.sku, {})
        eligible: list[_Candidate] = []
        dropped: list[CandidateTrace] = []
        for loc in locations:
            raw = sku_stock.get(loc.id)
            available = None if raw is None else raw - taken.get((line.sku, loc.id), 0)
            reason, floor, giveable = _screen(
                loc,
                available,
                capacity[loc.id],
                policy,
                fulfillment,
                distances[loc.id],
                sku_thresholds.get(loc.id, 0),
            )
            if reason is not None:
                dropped.append(
                    CandidateTrace(
                        loc.id,
                        loc.type,
                        distances[loc.id],
                        max(0, available or 0),
                        floor,
                        0,
                        "dropped",
                        reason,
                    )
                )
                continue
            cand = _Candidate(loc, distances[loc.id], max(0, available or 0), floor, giveable)
            cand.key = _location_key(cand, ranking)
            eligible.append(cand)
        eligible.sort(key=lambda c: c.key)
        picks: list[tuple[_Candidate, int]] = []
        searched = 0
        pool_ids: set[str] = set()
        if eligible:
            picks, pool_ids, searched = _search(eligible, line.qty, policy, pool_size)
        chosen = {c.location.id: q for c, q in picks}
        traces: list[CandidateTrace] = []
        for cand in eligible:
            values = dict(zip(ranking, _score([(cand, cand.giveable)], ranking), strict=True))
            status = (
                "chosen"
                if cand.location.id in chosen
                else "not_chosen"
                if cand.location.id in pool_ids
                else "outside_search_pool"
            )
            traces.append(
                CandidateTrace(
                    cand.location.id,
                    cand.location.type,
                    cand.distance_km,
                    cand.available,
                    cand.floor,
                    cand.giveable,
                    status,
                    None,
                    values,
                )
            )
        traces.extend(dropped)
        allocated = sum(q for _, q in picks)
        for cand, q in picks:
            taken[(line.sku, cand.location.id)] = taken.get((line.sku, cand.location.id), 0) + q
            left = capacity[cand.location.id]
            if left is not None:
                capacity[cand.location.id] = left - q
        results.append(
            LineAllocation(
                sku=line.sku,
                qty=line.qty,
                picks=tuple(Pick(c.location.id, q) for c, q in picks),
                unallocated=line.qty - allocated,
                candidates=tuple(traces),
                combinations_searched=searched,
                note=None if allocated == line.qty else "not enough giveable stock within the policy",
            )
        )
    plan = AllocationPlan(tuple(results))
    if not policy.allow_partial and not plan.complete:
        # all-or-nothing: keep the trace of what was tried, give nothing
        return AllocationPlan(
            tuple(
                LineAllocation(
                    sku=line.sku,
                    qty=line.qty,
                    picks=(),
                    unallocated=line.qty,
                    candidates=tuple(
                        CandidateTrace(
                            t.location,
                            t.type,
                            t.distance_km,
                            t.available,
                            t.floor,
                            t.giveable,
                            "not_chosen" if t.status == "chosen" else t.status,
                            t.reason,
                            t.score,
                        )
                        for t in line.candidates
                    ),
                    combinations_searched=line.combinations_searched,
                    note="order not allocated: a line could not be served in full and partial is not allowed",
                )
                for line in results
            )
        )
    return plan


# ---------------------------------------------------------------------------------------------------------
# The same choice over arrays: what `allocate(..., explain=False)` runs, and what a caller that allocates
# many orders on one network (the simulator) calls directly.

UNLIMITED = 1 << 62  # the remaining daily capacity of a location without a daily limit
# Entries a cache of `Network` or `Allocator` holds before it starts again from empty: a replayed order log
# may give every order its own destination, and with the ruleset memo off every order its own policy.
CACHE_LIMIT = 4096
IndexedPicks = list[list[tuple[int, int]]]  # per line: (location index, qty)
_DYNAMIC = ("fewest_splits", "stock_level")
# candidates from which `Allocator._by_depth` walks a tracked row deepest first instead of screening them all
_DEPTH_WALK_FROM = 24


class Network:
    """Locations indexed by position, with the distances to a destination computed once per destination.
    The locations' `capacity_remaining` is not read here: `Allocator.plan` takes capacity per call."""

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
        """Kilometres from every location to a destination."""
        key = (lat, lon)
        found = self._distances.get(key)
        if found is None:
            found = [haversine_km(loc.lat, loc.lon, lat, lon) for loc in self.locations]
            if len(self._distances) >= CACHE_LIMIT:
                self._distances.clear()
            self._distances[key] = found
        return found


class _Static:
    """The candidates of one (policy, fulfillment, pickup location, destination) that pass the checks which
    do not depend on stock: as listed (the general search) and in the order of the stock-independent part
    of the ranking key (`locs`, with `dists` alongside and `coded` for the sort keys)."""

    __slots__ = ("by_rank", "coded", "dists", "fast", "floor_of", "has_capacity", "listed", "locs", "pairs", "rank_of",
                 "type_floors")  # fmt: skip

    def __init__(self, listed: list[tuple[int, float, int]], ordered: list[tuple[int, float, int]],
                 fast: bool, by_rank: bool, has_capacity: bool, mask: int, type_of: Sequence[int]) -> None:  # fmt: skip
        self.listed = listed
        self.locs = [loc for loc, _, _ in ordered]
        self.dists = [d for _, d, _ in ordered]
        self.pairs = [(loc, floor) for loc, _, floor in ordered]
        self.rank_of = [0] * len(type_of)  # per location of the network: its rank in static order
        for rank, (loc, _, _) in enumerate(ordered):
            self.rank_of[loc] = rank
        # per location of the network: its floor when it is a candidate, -1 when it is not
        self.floor_of = [-1] * len(type_of)
        # (location type, its floor) of the types among the candidates, all of one type having one floor
        type_floors: dict[int, int] = {}
        for loc, _, floor in listed:
            self.floor_of[loc] = floor
            type_floors[type_of[loc]] = floor
        self.type_floors = sorted(type_floors.items())
        # fast: every stock-dependent criterion comes before every static one, so the ranking key is
        # (-giveable, static parts..., id) and a stable sort by giveable of `locs` gives the key order
        self.fast = fast
        # by_rank: fast and fewest_splits is the only stock-dependent criterion, so among single locations
        # that each take the whole line the static order decides
        self.by_rank = by_rank
        self.has_capacity = has_capacity
        # (location, floor, mask - rank in static order): what a candidate's sort key is made of
        self.coded = [(loc, floor, mask - rank) for rank, (loc, _, floor) in enumerate(ordered)]


class Allocator:
    """`allocate`'s choice over integer indexes: stock as `available[sku][location]`, capacity as
    `capacity[location]` (`UNLIMITED`: no daily limit), and per (policy, fulfillment, pickup, destination)
    the stock-independent screening and order of the candidates computed once and kept."""

    def __init__(
        self, network: Network, capped: Sequence[int] | None = None, pool_size: int = SEARCH_POOL_SIZE
    ) -> None:
        """`capped`: the indexes of the locations that may have a daily capacity (None: any may)."""
        self.network = network
        self.capped = set(range(len(network.ids)) if capped is None else capped)
        self.pool_size = pool_size
        # pool size of a single-location search: the deepest location plus up to pool_size others
        self._single_pool = 1 + max(0, min(pool_size, MAX_COMBINATIONS - 1))
        # what the static screening depends on in a policy -> (lat, lon, fulfillment, pickup) -> candidates
        self._static: dict[tuple[Any, ...], dict[tuple[float, float, str, int], _Static]] = {}
        # policy -> the candidates of its signature (equal policies are one key)
        self._signatures: dict[AllocationPolicy, dict[tuple[float, float, str, int], _Static]] = {}
        self._kept = 0  # candidate lists held over all signatures
        # (policy, lat, lon, fulfillment, pickup) -> its candidates: one look-up for an order like one before
        self._recent: dict[tuple[AllocationPolicy, float, float, str, int], _Static] = {}
        # a candidate's sort key is giveable << _rank_bits | (_rank_mask - its rank in static order)
        self._rank_bits = max(1, len(network.ids).bit_length())
        self._rank_mask = (1 << self._rank_bits) - 1
        # the stock rows given to `track`, and per SKU and location type the locations of that type as
        # (-available, location), ascending: deepest first; `_seen` holds the units each was filed under
        self._tracked: Sequence[Sequence[int]] | None = None
        self._depth: list[list[list[tuple[int, int]]]] = []
        self._seen: list[list[int]] = []
        self._changed: set[tuple[int, int]] = set()  # (sku, location) changed since they were last filed
        types = sorted(set(network.types))
        self._type_of = [types.index(t) for t in network.types]
        # every location's daily capacity (`UNLIMITED`: none), as the locations give it
        self.capacity = [
            UNLIMITED if loc.capacity_remaining is None else loc.capacity_remaining
            for loc in network.locations
        ]

    @classmethod
    def over(cls, locations: Sequence[Location], pool_size: int = SEARCH_POOL_SIZE) -> Allocator:
        """An allocator over these locations, those with a daily capacity counted as capped."""
        network = Network(locations)
        capped = [i for i, loc in enumerate(network.locations) if loc.capacity_remaining is not None]
        return cls(network, capped, pool_size)

    def _by_signature(self, policy: AllocationPolicy) -> dict[tuple[float, float, str, int], _Static]:
        """The candidates kept for every policy that screens as this one does."""
        found = self._signatures.get(policy)
        if found is None:
            signature = (
                tuple(sorted(policy.eligible_location_types)),
                tuple(sorted(policy.floors.items())),
                policy.max_distance_km,
                policy.effective_ranking,
            )
            if len(self._static) >= CACHE_LIMIT or len(self._signatures) >= CACHE_LIMIT:
                self._forget()
            found = self._signatures[policy] = self._static.setdefault(signature, {})
        return found

    def _candidates(
        self, policy: AllocationPolicy, fulfillment: str, pickup: int, lat: float, lon: float
    ) -> _Static:
        key = (policy, lat, lon, fulfillment, pickup)
        found = self._recent.get(key)
        if found is None:
            found = self._kept_candidates(policy, fulfillment, pickup, lat, lon)
            if len(self._recent) >= CACHE_LIMIT:
                self._recent.clear()
            self._recent[key] = found
        return found

    def _kept_candidates(
        self, policy: AllocationPolicy, fulfillment: str, pickup: int, lat: float, lon: float
    ) -> _Static:
        kept = self._by_signature(policy)
        key = (lat, lon, fulfillment, pickup)
        found = kept.get(key)
        if found is not None:
            return found
        net = self.network
        distances = net.distances(lat, lon)
        listed: list[tuple[int, float, int]] = []
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
            listed.append((i, distances[i], policy.floor_for(net.types[i])))
        ranking = policy.effective_ranking
        dynamic = [c in _DYNAMIC for c in ranking]
        fast = dynamic == sorted(dynamic, reverse=True)
        static_criteria = [c for c in ranking if c not in _DYNAMIC]

        def static_key(item: tuple[int, float, int]) -> tuple[Any, ...]:
            loc, distance, _ = item
            parts: list[Any] = [distance if c == "distance" else net.priority[loc] for c in static_criteria]
            return (*parts, net.ids[loc])

        found = _Static(
            listed,
            sorted(listed, key=static_key),
            fast,
            fast and "stock_level" not in ranking,
            any(loc in self.capped for loc, _, _ in listed),
            self._rank_mask,
            self._type_of,
        )
        if self._kept >= CACHE_LIMIT:
            self._forget()
            kept = self._by_signature(policy)
        kept[key] = found
        self._kept += 1
        return found

    def _forget(self) -> None:
        """Start the candidate caches again from empty."""
        self._static.clear()
        self._signatures.clear()
        self._recent.clear()
        self._kept = 0

    def track(self, available: Sequence[Sequence[int]]) -> Callable[[tuple[int, int]], None]:
        """Keep every SKU's locations of these stock rows in order of available units, so that `plan` on
        these same rows finds the deepest candidates without screening every location. The owner of the
        rows must call the function returned after every change of `available[sku][location]`, with the
        pair `(sku, location)` (it only notes the pair: the locations are filed again when next needed);
        `plan` on other rows screens every candidate as before."""
        self._tracked = available
        self._changed = set()
        self._seen = [list(row) for row in available]
        types = max(self._type_of, default=-1) + 1
        self._depth = []
        for row in available:
            by_type: list[list[tuple[int, int]]] = [[] for _ in range(types)]
            for loc, units in enumerate(row):
                by_type[self._type_of[loc]].append((-units, loc))
            self._depth.append([sorted(filed) for filed in by_type])
        return self._changed.add

    def _refile(self) -> None:
        """File the changed (sku, location) pairs of the tracked rows again under their available units."""
        tracked, all_seen, all_depth, type_of = self._tracked, self._seen, self._depth, self._type_of
        assert tracked is not None
        for sku, loc in self._changed:
            units = tracked[sku][loc]
            seen = all_seen[sku]
            before = seen[loc]
            if units != before:
                depth = all_depth[sku][type_of[loc]]
                del depth[bisect_left(depth, (-before, loc))]
                insort(depth, (-units, loc))
                seen[loc] = units
        self._changed.clear()

    def _by_depth(
        self,
        static: _Static,
        sku: int,
        row: Sequence[int],
        caps: Sequence[int],
        low: Sequence[int] | None,
        qty: int,
    ) -> tuple[list[tuple[int, int]], int] | None:
        """`_screened` for a tracked row and a `by_rank` ranking, when the deepest candidate covers the
        line (None otherwise: the caller screens every candidate).

        The search pool is then the `size` deepest candidates (size: the single-location pool, or fewer
        when fewer give anything), and the winner the first candidate in static order among those that
        cover the line. That is the first candidate in static order whose giveable units reach both the
        line and the size-th largest giveable, which is found by walking the locations of each candidate
        type deepest first (one floor per type) and stopping once no location further down can give more
        than the size-th largest so far."""
        if self._changed:
            self._refile()
        floor_of = static.floor_of
        capped = static.has_capacity
        size = self._single_pool
        top: list[int] = []  # the largest giveable units so far (at most `size`), smallest first
        walked: list[tuple[int, int]] = []  # (giveable, location) of the candidates walked
        left = 0  # the most the first location left unwalked of any type could give
        depth = self._depth[sku]
        for kind, floor in static.type_floors:
            for negative, loc in depth[kind]:
                giveable = -negative - floor
                if giveable <= 0 or (len(top) == size and giveable <= top[0]):
                    # nothing of this type from here on gives anything, or more than the size-th
                    if giveable > left:
                        left = giveable
                    break
                if floor_of[loc] < 0 or (low is not None and -negative < low[loc]):
                    continue
                if capped:
                    cap = caps[loc]
                    if cap <= 0:
                        continue
                    if cap < giveable:
                        giveable = cap
                walked.append((giveable, loc))
                if len(top) < size:
                    heappush(top, giveable)
                elif giveable > top[0]:
                    heapreplace(top, giveable)
        if not top:
            return [], 0
        if max(top) < qty:
            return None
        least_kept = top[0] if top[0] > qty else qty
        if left < least_kept:
            # no location left unwalked reaches it: the winner is among those walked
            rank_of = static.rank_of
            best = min([rank_of[loc] for giveable, loc in walked if giveable >= least_kept])
            return [(static.locs[best], qty)], len(top)
        for loc, floor in static.pairs:
            units = row[loc]
            giveable = units - floor
            if giveable < least_kept or (low is not None and units < low[loc]):
                continue
            if capped and caps[loc] < least_kept:
                continue
            return [(loc, qty)], len(top)
        raise AssertionError("the deepest candidate covers the line")

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
        thresholds: Sequence[Sequence[int] | None] | None = None,
        searched: list[int] | None = None,
    ) -> IndexedPicks:
        """Picks per line for `lines` of (sku index, qty); every line empty when the order is refused
        (not served in full and the policy allows no partial allocation).

        `pickup`: the index of the pickup location (-1: none). `thresholds[i][location]`: the low-stock
        threshold of line i's SKU (None: none): a location with less available than that gives nothing.
        `searched`, when given, receives the number of combinations searched per line."""
        static = self._candidates(policy, fulfillment, pickup, lat, lon)
        ranking = policy.effective_ranking
        if static.fast and len(lines) == 1:
            # one line (most orders): nothing taken before it
            sku, qty = lines[0]
            low = thresholds[0] if thresholds is not None else None
            one, tried = self._screened(static, sku, available, capacity, low, qty, policy, ranking)
            if searched is not None:
                searched.append(tried)
            if not policy.allow_partial and (one[0][1] if len(one) == 1 else sum(q for _, q in one)) < qty:
                return [[]]
            return [one]
        ids = self.network.ids
        priority = self.network.priority
        taken: dict[tuple[int, int], int] = {}
        cap_used: dict[int, int] = {}
        out: IndexedPicks = []
        complete = True
        for index, (sku, qty) in enumerate(lines):
            row = available[sku]
            low = thresholds[index] if thresholds is not None else None
            picks: list[tuple[int, int]] | None = None
            tried = 0
            if static.fast and not (taken and any(key[0] == sku for key in taken)):
                caps = capacity
                if cap_used and static.has_capacity:
                    caps = list(capacity)
                    for loc, used in cap_used.items():
                        caps[loc] -= used
                picks, tried = self._screened(static, sku, available, caps, low, qty, policy, ranking)
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
                if eligible:
                    picks, tried = _choose(eligible, qty, policy, ranking, priority, ids, self.pool_size)
                else:
                    picks = []
            if searched is not None:
                searched.append(tried)
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

    def _screened(
        self,
        static: _Static,
        sku: int,
        available: Sequence[Sequence[int]],
        caps: Sequence[int],
        low: Sequence[int] | None,
        qty: int,
        policy: AllocationPolicy,
        ranking: Sequence[str],
    ) -> tuple[list[tuple[int, int]], int]:
        """The search for a ranking whose key order is depth order (`static.fast`). Every eligible candidate
        becomes one integer, giveable units above the bits of its complemented static rank, so that one
        sort of plain integers (descending) puts them in key order: deepest first, equal depths in static
        order."""
        row = available[sku]
        if static.by_rank and available is self._tracked and len(static.locs) > _DEPTH_WALK_FROM:
            found = self._by_depth(static, sku, row, caps, low, qty)
            if found is not None:
                return found
        bits = self._rank_bits
        if static.has_capacity:
            if low is None:
                keys = [
                    (g if (g := a - floor) < c else c) << bits | code
                    for loc, floor, code in static.coded
                    if (a := row[loc]) > floor and (c := caps[loc]) > 0
                ]
            else:
                keys = [
                    (g if (g := a - floor) < c else c) << bits | code
                    for loc, floor, code in static.coded
                    if (a := row[loc]) > floor and a >= low[loc] and (c := caps[loc]) > 0
                ]
        elif low is None:
            keys = [
                (a - floor) << bits | code for loc, floor, code in static.coded if (a := row[loc]) > floor
            ]
        else:
            keys = [
                (a - floor) << bits | code
                for loc, floor, code in static.coded
                if (a := row[loc]) > floor and a >= low[loc]
            ]
        if not keys:
            return [], 0
        keys.sort(reverse=True)
        mask = self._rank_mask
        if static.by_rank and keys[0] >> bits >= qty:
            # Fewest splits first, no stock level, and the deepest location covers the line: the search
            # pool is the `size` deepest, and among those that cover the line (a prefix) every one scores
            # by its static criteria alone, so the one first in static order (largest code) wins.
            size = min(len(keys), self._single_pool)
            covering = qty << bits
            if keys[size - 1] >= covering:  # the whole pool covers the line (always so for one unit)
                best = max(map(mask.__and__, keys[:size]))
            else:
                best = max(k & mask for k in keys[:size] if k >= covering)
            return [(static.locs[mask - best], qty)], size
        if ranking[0] == "fewest_splits" and keys[0] >> bits >= qty:
            # The stock level is ranked too, before every static criterion, and the deepest location
            # covers the line: a single location is searched for, and the deepest (first in key order)
            # wins, as in `_choose_sorted`.
            return [(static.locs[mask - (keys[0] & mask)], qty)], min(len(keys), self._single_pool)
        locs, dists = static.locs, static.dists
        cands = []  # (giveable, -rank, location, distance), as `_choose_sorted` takes them
        for k in keys:
            rank = mask - (k & mask)
            cands.append((k >> bits, -rank, locs[rank], dists[rank]))
        return _choose_sorted(
            cands,
            qty,
            policy,
            ranking,
            self.network.priority,
            self.network.ids,
            static.by_rank,
            self.pool_size,
        )


def _search_sizes(
    depths: Sequence[int], qty: int, policy: AllocationPolicy, ranking: Sequence[str]
) -> list[int]:
    """The combination sizes searched, given the giveable units deepest first (as `_search`)."""
    max_k = min(policy.max_splits, len(depths), MAX_SEARCH_SPLITS)
    if ranking[0] != "fewest_splits":
        return list(range(1, max_k + 1))
    running = 0
    for k in range(1, max_k + 1):
        running += depths[k - 1]
        if running >= qty:
            return [k]
    return [max_k]


def _pool_extra(must: int, others: int, sizes: Sequence[int], pool_size: int) -> int:
    """How many locations besides the `must` deepest join the pool (as `_search`)."""
    extra = max(0, min(pool_size, others))
    if sizes == [1]:  # one combination per location
        return min(extra, max(0, MAX_COMBINATIONS - must))
    while extra > 0 and sum(math.comb(must + extra, k) for k in sizes) > MAX_COMBINATIONS:
        extra -= 1
    return extra


def _choose_sorted(
    eligible: list[tuple[int, int, int, float]],
    qty: int,
    policy: AllocationPolicy,
    ranking: Sequence[str],
    priority: Sequence[int],
    ids: Sequence[str],
    by_rank: bool,
    pool_size: int,
) -> tuple[list[tuple[int, int]], int]:
    """`_search` for candidates (giveable, -rank, location, distance) already in key order, which is then
    also depth order."""
    sizes = _search_sizes([c[0] for c in eligible[:MAX_SEARCH_SPLITS]], qty, policy, ranking)
    m = max(sizes)
    pool = eligible[: m + _pool_extra(m, len(eligible) - m, sizes, pool_size)]
    if sizes == [1]:
        searched = len(pool)
        if pool[0][0] >= qty:
            # the deepest location covers the line, so the best single location is among those that
            # cover it (the pool's prefix, as it is in depth order), each taking exactly `qty`
            if not by_rank:
                # the stock level is ranked, before every static criterion: the deepest wins, and among
                # equal depths the static order, which is the pool's order
                return [(pool[0][2], qty)], searched
            # scores are then the static criteria, so the static order decides: the largest -rank
            best = max((c for c in pool if c[0] >= qty), key=_second)
            return [(best[2], qty)], searched
        best_key: tuple[Any, ...] | None = None
        best_pick = (0, 0)
        for g, _, loc, d in pool:
            take = g if g < qty else qty
            key = (-take, *_single_score(ranking, d, priority[loc], g), ids[loc])
            if best_key is None or key < best_key:
                best_key = key
                best_pick = (loc, take)
        return [best_pick], searched
    searched = sum(math.comb(len(pool), k) for k in sizes)
    keyed = [((), loc, d, g) for g, _, loc, d in pool]
    return _search_pool(keyed, sizes, qty, ranking, priority, ids), searched


_second = itemgetter(1)


def _single_score(ranking: Sequence[str], distance: float, priority: int, giveable: int) -> tuple[float, ...]:
    """`_score` of one location."""
    return tuple(
        1.0
        if criterion == "fewest_splits"
        else distance
        if criterion == "distance"
        else float(priority)
        if criterion == "priority"
        else -float(giveable)
        for criterion in ranking
    )


def _key(
    ranking: Sequence[str], distance: float, priority: int, giveable: int, loc_id: str
) -> tuple[Any, ...]:
    """`_location_key` on plain values."""
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
    pool_size: int,
) -> tuple[list[tuple[int, int]], int]:
    """`_search` on tuples (key, location, distance, giveable), in any order."""
    eligible.sort(key=_first)
    deepest = sorted(eligible, key=lambda c: (-c[3], c[0]))
    sizes = _search_sizes([c[3] for c in deepest[:MAX_SEARCH_SPLITS]], qty, policy, ranking)
    must = deepest[: max(sizes)]
    must_ids = {c[1] for c in must}
    others = [c for c in eligible if c[1] not in must_ids]
    extra = others[: _pool_extra(len(must), len(others), sizes, pool_size)]
    pool = sorted(must + extra, key=_first)
    searched = sum(math.comb(len(pool), k) for k in sizes)
    return _search_pool(pool, sizes, qty, ranking, priority, ids), searched


_first = itemgetter(0)


def _search_pool(
    pool: list[tuple[tuple[Any, ...], int, float, int]],
    sizes: list[int],
    qty: int,
    ranking: Sequence[str],
    priority: Sequence[int],
    ids: Sequence[str],
) -> list[tuple[int, int]]:
    """Fill every combination of the pool in pool order and keep the best by `_score`."""
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
            if len(picks) == 1:
                loc, _, distance, giveable = picks[0]
                score = _single_score(ranking, distance, priority[loc], giveable)
            else:
                units = allocated or 1
                values: list[float] = []
                for criterion in ranking:
                    if criterion == "fewest_splits":
                        values.append(float(len(picks)))
                    elif criterion == "distance":
                        values.append(sum(d * q for _, q, d, _ in picks) / units)
                    elif criterion == "priority":
                        values.append(sum(priority[loc] * q for loc, q, _, _ in picks) / units)
                    else:
                        values.append(-sum(g * q for _, q, _, g in picks) / units)
                score = tuple(values)
            key = (-allocated, *score, tuple(ids[loc] for loc, _, _, _ in picks))
            if best is None or key < best:
                best = key
                best_picks = [(loc, q) for loc, q, _, _ in picks]
    return best_picks


def _allocate_indexed(
    lines: Sequence[OrderLine],
    locations: Sequence[Location],
    stock: Mapping[str, Mapping[str, int]],
    policy: AllocationPolicy,
    fulfillment: Fulfillment,
    destination: Destination,
    low_stock_thresholds: Mapping[str, Mapping[str, int]] | None,
    capacity_used: Mapping[str, int],
    pool_size: int,
    allocator: Allocator | None,
) -> AllocationPlan:
    """`allocate` without the trace, through `Allocator` (the caller's, or one made for this order)."""
    if allocator is None or allocator.pool_size != pool_size:
        allocator = Allocator.over(locations, pool_size)
    network, capacity = allocator.network, allocator.capacity
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
            available.append([sku_stock.get(loc_id, 0) for loc_id in network.ids])
    thresholds: list[Sequence[int] | None] | None = None
    if low_stock_thresholds:
        thresholds = []
        for line in lines:
            sku_low = low_stock_thresholds.get(line.sku)
            thresholds.append([sku_low.get(loc_id, 0) for loc_id in network.ids] if sku_low else None)
    pickup = network.index.get(fulfillment.pickup_location or "", -1)
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
    )
    refused = not policy.allow_partial and any(
        sum(q for _, q in line_picks) < line.qty for line, line_picks in zip(lines, picks, strict=True)
    )
    results: list[LineAllocation] = []
    for line, line_picks, tried in zip(lines, picks, searched, strict=True):
        allocated = sum(q for _, q in line_picks)
        if refused:
            note: str | None = (
                "order not allocated: a line could not be served in full and partial is not allowed"
            )
        else:
            note = None if allocated == line.qty else "not enough giveable stock within the policy"
        results.append(
            LineAllocation(
                sku=line.sku,
                qty=line.qty,
                picks=tuple(Pick(network.ids[loc], q) for loc, q in line_picks),
                unallocated=line.qty - allocated,
                candidates=(),
                combinations_searched=tried,
                note=note,
            )
        )
    return AllocationPlan(tuple(results))


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
