"""Channel availability: how many units of a SKU a channel may sell right now.

Pure code. Per location the availability ruleset says whether the location serves the channel, the floor it
keeps back for higher-priority channels and its low-stock threshold; a promotion may cap the units one order
may take. A location gives `max(0, available - floor)`, nothing at all while its available stock is below its
low-stock threshold, and the SKU's total is capped by the per-order cap.

The same rule decides what a reservation may take: `protected_level` is the level a reservation must leave
at a location (`available - qty >= protected_level`), so a reservation under the same policy grants exactly
what `sellable_at` promises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from service.domain.errors import PolicyError


@dataclass(frozen=True, slots=True)
class LocationPolicy:
    """The availability ruleset's answer for one location and SKU."""

    eligible: bool
    floor: int = 0
    low_stock_threshold: int = 0
    per_order_cap: int | None = None
    reason: str | None = None

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> LocationPolicy:
        eligible = result.get("eligible", True)
        if not isinstance(eligible, bool):
            raise PolicyError("eligible", "expected true or false")
        values: dict[str, int | None] = {}
        for key in ("floor", "low_stock_threshold", "per_order_cap"):
            raw = result.get(key)
            if raw is None:
                values[key] = None
                continue
            if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
                raise PolicyError(key, "expected a number of units >= 0")
            values[key] = int(raw)
        reason = result.get("reason")
        return cls(
            eligible=eligible,
            floor=values["floor"] or 0,
            low_stock_threshold=values["low_stock_threshold"] or 0,
            per_order_cap=values["per_order_cap"],
            reason=None if reason is None else str(reason),
        )


def protected_level(available: int, floor: int, low_stock_threshold: int) -> int:
    """The level a channel must leave at a location: its floor, or all of it below the low-stock threshold."""
    if available < low_stock_threshold:
        return max(floor, available, 0)
    return max(floor, 0)


def sellable_at(available: int, floor: int, low_stock_threshold: int) -> int:
    """Units a channel may take from one location."""
    return max(0, available - protected_level(available, floor, low_stock_threshold))


@dataclass(frozen=True, slots=True)
class LocationAvailability:
    location: str
    available: int
    floor: int
    low_stock_threshold: int
    sellable: int
    eligible: bool
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "location": self.location,
            "available": self.available,
            "floor": self.floor,
            "low_stock_threshold": self.low_stock_threshold,
            "sellable": self.sellable,
            "eligible": self.eligible,
        }
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True, slots=True)
class SkuAvailability:
    sku: str
    sellable: int
    uncapped: int
    per_order_cap: int | None
    locations: tuple[LocationAvailability, ...]

    def to_dict(self, *, with_locations: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"sku": self.sku, "sellable": self.sellable}
        if self.per_order_cap is not None:
            out["per_order_cap"] = self.per_order_cap
            out["uncapped"] = self.uncapped
        if with_locations:
            out["locations"] = [loc.to_dict() for loc in self.locations]
        return out


def sku_availability(
    sku: str,
    stock: Sequence[tuple[str, int]],
    policies: Mapping[str, LocationPolicy],
    *,
    detail: bool = True,
) -> SkuAvailability:
    """Sellable units of one SKU. `stock`: (location id, available) pairs; `policies`: location id ->
    policy (a location without a policy is not eligible). The per-order cap is the smallest cap any
    eligible location's policy sets. Without `detail` the per-location rows are left out."""
    rows: list[LocationAvailability] = []
    total = 0
    caps: list[int] = []
    for location, available in stock:
        policy = policies.get(location)
        if policy is None or not policy.eligible:
            if not detail:
                continue
            rows.append(
                LocationAvailability(
                    location,
                    max(0, available),
                    0 if policy is None else policy.floor,
                    0 if policy is None else policy.low_stock_threshold,
                    0,
                    False,
                    "no policy for this location" if policy is None else policy.reason or "not eligible",
                )
            )
            continue
        units = sellable_at(available, policy.floor, policy.low_stock_threshold)
        total += units
        if policy.per_order_cap is not None:
            caps.append(policy.per_order_cap)
        if not detail:
            continue
        reason = None
        if available < policy.low_stock_threshold and available > policy.floor:
            reason = "below low-stock threshold"
        rows.append(
            LocationAvailability(
                location,
                max(0, available),
                policy.floor,
                policy.low_stock_threshold,
                units,
                True,
                reason,
            )
        )
    cap = min(caps) if caps else None
    return SkuAvailability(
        sku=sku,
        sellable=total if cap is None else min(total, cap),
        uncapped=total,
        per_order_cap=cap,
        locations=tuple(rows),
    )


@dataclass(frozen=True, slots=True)
class PreparedPolicies:
    """One SKU's location policies made ready for `sellable_units`: the eligible locations grouped by
    their (floor, threshold) pair, and those of them that set a per-order cap. A location of a group gives
    `available - floor` when its available stock reaches the group's threshold `max(floor + 1, low-stock
    threshold)` (the same rule as `sellable_at`), so a group sums in one pass over its locations. Built
    once per policy table and reused by every request that reads it."""

    groups: tuple[tuple[tuple[str, ...], int, int], ...]  # (locations, floor, threshold)
    caps: tuple[tuple[str, int], ...]
    # the groups, each with what reads its locations' units out of a map in one call (KeyError if one is
    # missing): (reader, locations, floor, threshold)
    _plan: tuple[tuple[Callable[[Mapping[str, int]], tuple[int, ...]], tuple[str, ...], int, int], ...] = (
        field(init=False, repr=False, compare=False)
    )

    def __post_init__(self) -> None:
        plan = tuple(
            (_reader(locations), locations, floor, threshold) for locations, floor, threshold in self.groups
        )
        object.__setattr__(self, "_plan", plan)

    @classmethod
    def of(cls, policies: Mapping[str, LocationPolicy]) -> PreparedPolicies:
        eligible = [(loc, p) for loc, p in policies.items() if p.eligible]
        grouped: dict[tuple[int, int], list[str]] = {}
        for loc, p in eligible:
            grouped.setdefault((p.floor, max(p.floor + 1, p.low_stock_threshold)), []).append(loc)
        return cls(
            groups=tuple((tuple(locs), floor, threshold) for (floor, threshold), locs in grouped.items()),
            caps=tuple((loc, p.per_order_cap) for loc, p in eligible if p.per_order_cap is not None),
        )

    def totals(self, available: Mapping[str, int]) -> tuple[int, int | None]:
        """(sellable units before any cap, the per-order cap) from location -> available units."""
        total = 0
        for read, locations, floor, threshold in self._plan:
            try:
                taken = [units for units in read(available) if units >= threshold]
            except KeyError:  # a location without stock: the slower read that skips it
                found = map(available.get, locations)
                taken = [units for units in found if units is not None and units >= threshold]
            if taken:
                total += sum(taken) - floor * len(taken)
        caps = self.caps
        cap = min((c for location, c in caps if location in available), default=None) if caps else None
        return total, cap


def _reader(locations: tuple[str, ...]) -> Callable[[Mapping[str, int]], tuple[int, ...]]:
    """A function of a map giving the units at `locations` as a tuple, read in one call."""
    if len(locations) == 1:
        (location,) = locations
        return lambda available: (available[location],)
    return itemgetter(*locations)


def sellable_units(sku: str, available: Mapping[str, int], prepared: PreparedPolicies) -> SkuAvailability:
    """What `sku_availability(..., detail=False)` answers, from location -> available units (>= 0) and the
    prepared policies: a location gives `available - floor` when that is positive and its available
    stock is at least its low-stock threshold, else nothing (the same rule as `sellable_at`)."""
    total, cap = prepared.totals(available)
    return SkuAvailability(
        sku=sku,
        sellable=total if cap is None else min(total, cap),
        uncapped=total,
        per_order_cap=cap,
        locations=(),
    )
