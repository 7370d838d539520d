"""The allocation's vocabulary: orders, locations, the policy an allocation ruleset sets, and the plan."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
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
