"""KPIs of simulation runs as one JSON document, byte-identical for the same scenario, seed and versions.

Keys are sorted, floats are rounded to fixed places, and nothing in it depends on the clock or the machine
(no timestamps, no durations): two runs of the same inputs give the same bytes, so a KPI file can be
committed, diffed and compared.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from simulators.events import Event, Order, Receipt, Return, Sale
from simulators.runner import ChannelCounts, RunResult
from simulators.scenario import World
from simulators.screen import merged

FORMAT_VERSION = 1


def _ratio(part: float, whole: float, places: int = 4) -> float:
    return round(part / whole, places) if whole else 0.0


def channel_kpis(counts: ChannelCounts) -> dict[str, Any]:
    return {
        "orders": counts.orders,
        "units_demanded": counts.units_demanded,
        "units_allocated": counts.units_allocated,
        "fill_rate": _ratio(counts.units_allocated, counts.units_demanded),
        "order_fill_rate": _ratio(counts.orders_complete, counts.orders),
        "lost_units": counts.lost_units,
        "oversold_units": counts.oversold_units,
        "split_shipments": counts.split_orders,
        "shipments": counts.shipments,
        "mean_distance_km": round(counts.distance_km / counts.shipments, 3) if counts.shipments else 0.0,
        "revenue": round(counts.revenue, 2),
    }


def _percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile, None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def run_kpis(result: RunResult, skipped: Mapping[str, Mapping[str, int]] | None = None) -> dict[str, Any]:
    """The KPIs of one run; `skipped`: the events left out of its stream before it ran (by type and
    reason), added to those the run itself skipped under `events_skipped`."""
    channels = {name: channel_kpis(counts) for name, counts in sorted(result.channels.items())}
    total = ChannelCounts()
    for counts in result.channels.values():
        total.orders += counts.orders
        total.units_demanded += counts.units_demanded
        total.units_allocated += counts.units_allocated
        total.lost_units += counts.lost_units
        total.oversold_units += counts.oversold_units
        total.orders_complete += counts.orders_complete
        total.split_orders += counts.split_orders
        total.shipments += counts.shipments
        total.distance_km += counts.distance_km
        total.revenue += counts.revenue
    c = result.counts
    kpis = channel_kpis(total)
    kpis.update(
        {
            "order_decisions": result.order_decisions,
            "transfers_requested": c.transfers_requested,
            "transfers_approved": c.transfers_approved,
            "transfers_routed": c.transfers_routed,
            "transfers_rejected": c.transfers_rejected,
            "transfers_executed": c.transfers_executed,
            "transfers_expired": c.transfers_expired,
            "transfers_blocked": c.transfers_blocked,
            "approval_cycle_hours_p50": _percentile(c.approval_cycle_hours, 0.5),
            "approval_cycle_hours_p90": _percentile(c.approval_cycle_hours, 0.9),
            "markdowns_proposed": c.markdowns_proposed,
            "markdowns_approved": c.markdowns_approved,
            "markdowns_routed": c.markdowns_routed,
            "markdowns_rejected": c.markdowns_rejected,
            "reorders_raised": c.reorders_raised,
            "reorders_released": c.reorders_released,
            "reorders_for_review": c.reorders_for_review,
            "reorder_units": c.reorder_units,
            "reorders_unfilled": c.reorders_unfilled,
            "reorder_units_moved": c.reorder_units_moved,
            "reorder_units_ordered": c.reorder_units_ordered,
            "reorder_units_short": c.reorder_units_short,
            "reorder_units_received": c.reorder_units_received,
            "reorder_units_on_order": result.reorder_units_on_order,
            "stock_end": sum(result.stock_end.values()),
            "stock_end_by_type": dict(sorted(result.stock_end.items())),
            "on_order_units": result.on_order_units,
            "open_reservations": result.open_reservations,
        }
    )
    hours = result.hours
    series = {
        "hour": list(range(len(hours))),
        "orders": [h.orders for h in hours],
        "units_demanded": [h.units_demanded for h in hours],
        "units_allocated": [h.units_allocated for h in hours],
        "fill_rate": [
            _ratio(h.units_allocated, h.units_demanded) if h.units_demanded else 1.0 for h in hours
        ],
        "lost_units": [h.lost_units for h in hours],
        "oversold_units": [h.oversold_units for h in hours],
        "available_end": [h.available_end for h in hours],
    }
    return {
        "label": result.label,
        "view": result.view,
        "rulesets": result.rulesets,
        "kpis": kpis,
        "channels": channels,
        "conservation": dict(result.conservation),
        "events_skipped": merged(skipped or {}, c.skipped),
        "returns_applied": c.returns_applied,
        "syncs": c.syncs,
        "decisions": dict(sorted(c.decisions.items())),
        "evaluations": result.evaluations,
        "series": series,
        **{f"by_{name}": table for name, table in c.shortfalls.tables().items()},
    }


def event_counts(events: Sequence[Event]) -> dict[str, int]:
    counts = {"orders": 0, "sales": 0, "returns": 0, "receipts": 0, "order_lines": 0}
    for event in events:
        if isinstance(event, Order):
            counts["orders"] += 1
            counts["order_lines"] += len(event.lines)
        elif isinstance(event, Sale):
            counts["sales"] += 1
        elif isinstance(event, Return):
            counts["returns"] += 1
        elif isinstance(event, Receipt):
            counts["receipts"] += 1
    return counts


def kpi_document(
    world: World,
    events: Sequence[Event],
    results: Sequence[RunResult],
    *,
    engine: str,
    events_source: str,
    read: int | None = None,
    skipped: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, Any]:
    """`read`: the events of the source before screening (default: `events`); `skipped`: the events left
    out of `events` by screening (`simulators.screen`), by type and reason."""
    scenario = world.scenario
    return {
        "format": FORMAT_VERSION,
        "scenario": {
            "name": scenario.name,
            "description": scenario.description,
            "promotions": [_promotion(p) for p in scenario.promotions],
            "seed": scenario.seed,
            "start": world.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "duration_hours": scenario.duration_hours,
            "locations": len(world.locations),
            "locations_by_type": _by_type(world),
            "skus": len(world.skus),
            "stock_rows_skipped": dict(sorted(world.stock_skipped.items())),
            "channels": {c.id: _channel_view(c.view.mode, c.view.sync_every_hours) for c in world.channels},
        },
        "events": {
            "source": events_source,
            **event_counts(events),
            "read": len(events) if read is None else read,
            "replayed": len(events),
            "skipped": merged(skipped or {}),
        },
        "engine": engine,
        "runs": [run_kpis(result, skipped) for result in results],
    }


def _promotion(promotion: Any) -> dict[str, Any]:
    """A promotion as the report shows it: its fields but the uplift curve, times in ISO 8601."""
    fields = msgspec.structs.asdict(promotion)
    fields.pop("curve", None)
    out: dict[str, Any] = msgspec.to_builtins(fields)
    return out


def _by_type(world: World) -> dict[str, int]:
    out: dict[str, int] = {}
    for location in world.locations:
        out[location.type] = out.get(location.type, 0) + 1
    return dict(sorted(out.items()))


def _channel_view(mode: str, every: float | None) -> str:
    return "realtime" if mode == "realtime" else f"batch every {every:g} h"


def encode(document: dict[str, Any]) -> bytes:
    """Canonical bytes: sorted keys, two-space indent, a final newline."""
    raw = msgspec.json.encode(document, order="sorted")
    return msgspec.json.format(raw, indent=2) + b"\n"
