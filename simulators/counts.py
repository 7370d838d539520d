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
    returns_ignored: int = 0
    receipts_ignored: int = 0
    orders_ignored: int = 0
    syncs: int = 0
    decisions: dict[str, int] = field(default_factory=dict)


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
