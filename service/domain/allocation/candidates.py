"""Candidates and eligibility: the locations indexed by position (`Network`), the screening of a location
for a line and the reason it is dropped, and the candidates of one policy, fulfillment and destination
that pass the checks which do not depend on stock (`StaticCandidates`)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from service.domain.allocation.model import (
    DROP_BELOW_FLOOR,
    DROP_BELOW_LOW_STOCK,
    DROP_BEYOND_MAX_DISTANCE,
    DROP_INELIGIBLE_TYPE,
    DROP_NO_CAPABILITY,
    DROP_NO_CAPACITY,
    DROP_NO_STOCK,
    DROP_NOT_PICKUP_LOCATION,
    AllocationPolicy,
    Location,
    haversine_km,
)
from service.domain.allocation.ranking import DYNAMIC_CRITERIA, location_key

UNLIMITED = 1 << 62  # the remaining daily capacity of a location without a daily limit
# Entries a cache of `Network` or `Allocator` holds before it starts again from empty: a replayed order log
# may give every order its own destination, and with the ruleset memo off every order its own policy.
CACHE_LIMIT = 4096


class Network:
    """Locations indexed by position, with the distances to a destination computed once per destination.
    The locations' `capacity_remaining` is not read here: `Allocator.plan` takes capacity per call."""

    def __init__(self, locations: Sequence[Location]) -> None:
        # the sequence given, so that an order over the same locations is known to be (see `allocate`)
        self.given = locations
        self.locations = list(locations)
        self.index = {loc.id: i for i, loc in enumerate(self.locations)}
        self.ids = [loc.id for loc in self.locations]
        # the first location id listed twice (None: every id once), found once for every order
        self.repeated = next(
            (loc.id for i, loc in enumerate(self.locations) if self.index[loc.id] != i), None
        )
        self.zeros = [0] * len(self.ids)
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


class StaticCandidates:
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


def static_drop(
    net: Network, i: int, policy: AllocationPolicy, fulfillment: str, pickup: int, distance: float
) -> str | None:
    """Why location `i` cannot serve this order whatever its stock (None: it can), in the order the
    reasons are checked. `pickup`: the index of the pickup location (-1: none)."""
    if net.types[i] not in policy.eligible_location_types:
        return DROP_INELIGIBLE_TYPE
    if fulfillment == "pickup":
        if i != pickup:
            return DROP_NOT_PICKUP_LOCATION
        if not net.pickup[i]:
            return DROP_NO_CAPABILITY
    elif fulfillment == "ship_from_store" and not net.sfs[i]:
        return DROP_NO_CAPABILITY
    # a pickup customer travels to the store they chose, so distance limits apply to shipments only
    if fulfillment != "pickup" and policy.max_distance_km is not None and distance > policy.max_distance_km:
        return DROP_BEYOND_MAX_DISTANCE
    return None


def stock_drop(stock: int, floor: int, low: int, capacity: int) -> str:
    """Why a location that passed `static_drop` gives nothing to a line, in the order the reasons are
    checked: `stock` available units (after earlier lines), `floor` kept back, `low` its low-stock
    threshold, `capacity` left today."""
    if stock <= 0:
        return DROP_NO_STOCK
    if stock <= floor:
        return DROP_BELOW_FLOOR
    if stock < low:
        return DROP_BELOW_LOW_STOCK
    return DROP_NO_CAPACITY


def screen_static(
    net: Network,
    policy: AllocationPolicy,
    fulfillment: str,
    pickup: int,
    distances: Sequence[float],
    capped: Collection[int],
    mask: int,
    type_of: Sequence[int],
) -> StaticCandidates:
    """The candidates that pass `static_drop`, as listed and in static order (`location_key` by the static
    criteria of the ranking)."""
    listed = [
        (i, distances[i], policy.floor_for(net.types[i]))
        for i in range(len(net.ids))
        if static_drop(net, i, policy, fulfillment, pickup, distances[i]) is None
    ]
    ranking = policy.effective_ranking
    dynamic = [c in DYNAMIC_CRITERIA for c in ranking]
    fast = dynamic == sorted(dynamic, reverse=True)
    static_criteria = [c for c in ranking if c not in DYNAMIC_CRITERIA]
    priority, ids = net.priority, net.ids
    ordered = sorted(listed, key=lambda c: location_key(static_criteria, c[1], priority[c[0]], 0, ids[c[0]]))
    return StaticCandidates(
        listed,
        ordered,
        fast,
        fast and "stock_level" not in ranking,
        any(loc in capped for loc, _, _ in listed),
        mask,
        type_of,
    )
