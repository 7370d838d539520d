"""Availability decision: what a channel may sell per SKU, from the availability ruleset evaluated per
location (cached per distinct facts within a request), live stock and active promotions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.decisions.common import finish, stock_call
from service.decisions.context import DecisionContext, TraceLevel
from service.decisions.ids import new_decision_id
from service.decisions.record import DecisionRecord
from service.decisions.schemas import AvailabilityRequest
from service.domain.allocation import haversine_km
from service.domain.availability import LocationPolicy, sku_availability
from service.domain.errors import InvalidInput
from service.masterdata import ItemRecord, LocationRecord


@dataclass
class ChannelPolicies:
    """The availability ruleset's answer per (sku, location) for one channel, evaluated once per distinct
    set of facts."""

    ctx: DecisionContext
    channel: str
    trace: TraceLevel
    ruleset: Any = None
    _cache: dict[tuple[Any, ...], tuple[LocationPolicy, Any]] = field(default_factory=dict)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    evaluated: Any = None

    def __post_init__(self) -> None:
        self.ruleset = self.ctx.active("availability")

    def facts(self, item: ItemRecord, location: LocationRecord, promo: bool) -> dict[str, Any]:
        return {
            "request": {"channel": self.channel},
            "item": {"category": item.category, "price": float(item.price)},
            "location": {"type": location.type, "region": location.region},
            "promo": {"active": promo},
        }

    def policy(self, item: ItemRecord, location: LocationRecord) -> LocationPolicy:
        md = self.ctx.master_data
        promo = bool(md.promotions) and bool(
            md.active_promotions(item.sku, self.ctx.now, location.id, self.channel)
        )
        key = (item.category, item.price, location.type, location.region, promo)
        hit = self._cache.get(key)
        if hit is None:
            facts = self.facts(item, location, promo)
            evaluated = self.ruleset.evaluate(facts, self.trace)
            self.evaluated = evaluated
            policy = LocationPolicy.from_result(evaluated.evaluation.result)
            hit = (policy, evaluated)
            self._cache[key] = hit
            if self.trace != "none":
                self.evaluations.append({"facts": facts, "rules": evaluated.evaluation.trace})
        return hit[0]

    def ruleset_ref(self) -> dict[str, Any]:
        if self.evaluated is not None:
            ref: dict[str, Any] = self.evaluated.ruleset_ref()
            return ref
        probe = self.ruleset.evaluate({}, "none")
        ref = probe.ruleset_ref()
        return ref


def promotion_cap(ctx: DecisionContext, sku: str, channel: str) -> int | None:
    caps = [
        p.per_order_cap
        for p in ctx.master_data.active_promotions(sku, ctx.now, channel=channel)
        if p.per_order_cap is not None
    ]
    return min(caps) if caps else None


async def decide_availability(
    ctx: DecisionContext, request: AvailabilityRequest, trace: TraceLevel = "rules"
) -> DecisionRecord:
    decision_id = new_decision_id()
    md = ctx.master_data
    seen: set[str] = set()
    for i, sku in enumerate(request.skus):
        if sku in seen:
            raise InvalidInput(f"skus[{i}]", f"{sku!r} is listed twice")
        if sku not in md.items:
            raise InvalidInput(f"skus[{i}]", f"unknown sku {sku!r}")
        seen.add(sku)
    policies = ChannelPolicies(ctx, request.channel, trace)
    levels = await stock_call(ctx.stock.get_levels(request.skus))
    stock_ms = ctx.elapsed_ms()
    skus: list[dict[str, Any]] = []
    for sku in request.skus:
        item = md.items[sku]
        rows: list[tuple[str, int]] = []
        by_location: dict[str, LocationPolicy] = {}
        for location_id, level in sorted(levels.get(sku, {}).items()):
            location = md.locations.get(location_id)
            if location is None:
                continue  # stock at a location master data does not know is never sold
            rows.append((location_id, level.available))
            by_location[location_id] = policies.policy(item, location)
        result = sku_availability(sku, rows, by_location, detail=trace == "full")
        promo_cap = promotion_cap(ctx, sku, request.channel)
        out = result.to_dict(with_locations=trace == "full")
        if promo_cap is not None and promo_cap < result.sellable:
            out["sellable"] = promo_cap
            out["per_order_cap"] = promo_cap
            out["uncapped"] = result.uncapped
        if trace == "full" and request.destination is not None:
            for row in out["locations"]:
                loc = md.locations[row["location"]]
                row["distance_km"] = round(
                    haversine_km(loc.lat, loc.lon, request.destination.lat, request.destination.lon), 3
                )
        skus.append(out)
    decision = {"channel": request.channel, "skus": skus}
    trace_out = None if trace == "none" else {"evaluations": policies.evaluations}
    return await finish(
        ctx,
        decision_id=decision_id,
        kind="availability",
        request=request,
        decision=decision,
        evaluated=policies,
        trace=trace_out,
        shadow=None,
        timings={"stock_ms": stock_ms},
        subject=request.channel,
    )
