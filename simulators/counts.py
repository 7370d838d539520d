"""What a run counts (its sink): per channel, per hour and over the run, and the result it hands back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ChannelCounts:
    orders: int = 0
    units_demanded: int = 0
    units_allocated: int = 0
    lost_units: int = 0
    oversold_units: int = 0
    orders_complete: int = 0
    split_orders: int = 0
    shipments: int = 0
    distance_km: float = 0.0
    revenue: float = 0.0


@dataclass
class HourCounts:
    orders: int = 0
    units_demanded: int = 0
    units_allocated: int = 0
    lost_units: int = 0
    oversold_units: int = 0
    available_end: int = 0


@dataclass
class Shortfalls:
    """Lost and oversold units by SKU id, by location id (demand placed at a location: till sales at the
    store, click-and-collect orders at their pickup store) and by region (every demand: the store's region
    for till sales, the order's destination region for online orders). Only non-zero entries."""

    lost_sku: dict[str, int] = field(default_factory=dict)
    oversold_sku: dict[str, int] = field(default_factory=dict)
    lost_location: dict[str, int] = field(default_factory=dict)
    oversold_location: dict[str, int] = field(default_factory=dict)
    lost_region: dict[str, int] = field(default_factory=dict)
    oversold_region: dict[str, int] = field(default_factory=dict)

    def add(self, oversold: bool, sku: str, location: str | None, region: str, units: int) -> None:
        """Count `units` short of `sku`; `location` is None when the demand was placed at no location."""
        by_sku, by_location, by_region = (
            (self.oversold_sku, self.oversold_location, self.oversold_region)
            if oversold
            else (self.lost_sku, self.lost_location, self.lost_region)
        )
        by_sku[sku] = by_sku.get(sku, 0) + units
        if location is not None:
            by_location[location] = by_location.get(location, 0) + units
        by_region[region] = by_region.get(region, 0) + units

    def tables(self) -> dict[str, dict[str, dict[str, int]]]:
        """`sku`, `location` and `region`: id -> {"lost_units", "oversold_units"}, ids sorted."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for name, lost, oversold in (
            ("sku", self.lost_sku, self.oversold_sku),
            ("location", self.lost_location, self.oversold_location),
            ("region", self.lost_region, self.oversold_region),
        ):
            out[name] = {
                key: {"lost_units": lost.get(key, 0), "oversold_units": oversold.get(key, 0)}
                for key in sorted(set(lost) | set(oversold))
            }
        return out


@dataclass
class RunCounts:
    transfers_requested: int = 0
    transfers_approved: int = 0
    transfers_routed: int = 0
    transfers_rejected: int = 0
    transfers_executed: int = 0
    transfers_expired: int = 0
    transfers_blocked: int = 0
    approval_cycle_hours: list[float] = field(default_factory=list)
    markdowns_proposed: int = 0
    markdowns_approved: int = 0
    markdowns_routed: int = 0
    markdowns_rejected: int = 0
    shortfalls: Shortfalls = field(default_factory=Shortfalls)  # lost and oversold units by where
    reorders_raised: int = 0
    # released reorders that moved units (a store's) or placed a purchase order (a DC's)
    reorders_released: int = 0
    reorders_for_review: int = 0
    # released by the ruleset, but the store's DC had nothing to send
    reorders_unfilled: int = 0
    # units released: moved from a DC to a store plus ordered from suppliers
    reorder_units: int = 0
    reorder_units_moved: int = 0
    reorder_units_ordered: int = 0
    # units a released store reorder asked for that its DC could not send
    reorder_units_short: int = 0
    # released units that reached their location (store replenishment arrived, purchase orders received)
    reorder_units_received: int = 0
    returns_applied: int = 0
    syncs: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    # events the run could not replay: event type -> reason -> count (see `simulators.screen.REASONS`)
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)

    def skip(self, kind: str, reason: str) -> None:
        reasons = self.skipped.setdefault(kind, {})
        reasons[reason] = reasons.get(reason, 0) + 1


@dataclass
class RunResult:
    label: str
    view: str
    rulesets: dict[str, Any]
    channels: dict[str, ChannelCounts]
    hours: list[HourCounts]
    counts: RunCounts
    conservation: dict[str, int | bool]
    stock_end: dict[str, int]
    open_reservations: int
    on_order_units: int
    order_decisions: int
    evaluations: dict[str, dict[str, int]]
    # released reorder units on their way at the end: purchase orders and DC-to-store replenishment
    reorder_units_on_order: int = 0
