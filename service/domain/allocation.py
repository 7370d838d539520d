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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
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
    pool_size: int = SEARCH_POOL_SIZE,
    explain: bool = True,
) -> AllocationPlan:
    """Allocate every line of an order. `stock` maps sku -> location id -> available units;
    `low_stock_thresholds` (sku -> location id -> units) stops a location giving anything while its
    available stock is below the threshold, as channel availability does. With `explain` off, candidates
    carry no per-location score (the full trace needs it, the others do not)."""
    _validate(lines, locations)
    distances = {
        loc.id: haversine_km(loc.lat, loc.lon, destination.lat, destination.lon) for loc in locations
    }
    capacity: dict[str, int | None] = {loc.id: loc.capacity_remaining for loc in locations}
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
            values = (
                dict(zip(ranking, _score([(cand, cand.giveable)], ranking), strict=True)) if explain else None
            )
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
