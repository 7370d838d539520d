"""Reorder decisions for one sku-location or a scan of many: the projected position from live stock, the
demand rate (given, else the ledger's weighted rate when one is kept, else zero), promotions now and
within the lead time, the reorder ruleset, then the pure reorder policy."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.decisions.common import finish, known_item, known_location, stock_call
from service.decisions.context import DecisionContext, TraceLevel
from service.decisions.ids import new_decision_id
from service.decisions.record import DecisionRecord
from service.decisions.schemas import ReorderRequest, ReorderScanRequest
from service.domain.reorder import Position, ReorderPolicy, decide_reorder, promotion_flags, reorder_facts
from service.masterdata import ItemRecord, LocationRecord, MasterData
from service.stock import Levels


def promo_flags(md: MasterData, sku: str, location: str, now: datetime, lead_days: int) -> tuple[bool, bool]:
    """(a promotion runs now, one starts within the lead time) for the sku at the location."""
    windows = ((p.start, p.end) for p in md.promotions if p.applies(sku, location))
    return promotion_flags(windows, now, lead_days)


def _position(level: Levels | None) -> Position:
    lv = level or Levels()
    return Position(lv.sellable, lv.reserved, lv.in_transit, lv.return_pending)


def _one(
    ctx: DecisionContext,
    ruleset: Any,
    item: ItemRecord,
    location: LocationRecord,
    level: Levels | None,
    rate: float,
    rate_source: str,
    promo_upcoming: bool | None,
    trace: TraceLevel,
) -> tuple[dict[str, Any], dict[str, Any] | None, Any, dict[str, Any]]:
    position = _position(level)
    active, upcoming = promo_flags(ctx.master_data, item.sku, location.id, ctx.now, item.lead_time_days)
    facts = reorder_facts(
        position,
        daily_rate=rate,
        demand_known=rate_source != "none",
        lead_time_days=item.lead_time_days,
        case_pack=item.case_pack,
        price=item.price,
        cost=item.cost,
        category=item.category,
        location_type=location.type,
        promo_active=active,
        promo_upcoming=upcoming if promo_upcoming is None else promo_upcoming,
    )
    evaluated = ruleset.evaluate(facts, trace)
    policy = ReorderPolicy.from_result(evaluated.evaluation.result)
    outcome = decide_reorder(position, policy, item.case_pack)
    decision = {"sku": item.sku, "location": location.id, **outcome.to_dict(), "reason": policy.reason}
    trace_out = None
    if trace != "none":
        trace_out = {
            "rules": evaluated.evaluation.trace,
            "breakdown": outcome.breakdown(),
            "demand": {"daily_rate": rate, "source": rate_source},
            "promo": facts["promo"],
        }
    return decision, trace_out, evaluated, facts


async def _rates(
    ctx: DecisionContext, pairs: list[tuple[str, str]], given: dict[tuple[str, str], float]
) -> dict[tuple[str, str], tuple[float, str]]:
    out = {pair: (rate, "request") for pair, rate in given.items()}
    missing = [p for p in pairs if p not in out]
    if missing and ctx.demand is not None:
        for pair, rate in (await ctx.demand.rates(missing)).items():
            out[pair] = (rate, "ledger")
    return out


async def decide_reorder_one(
    ctx: DecisionContext, request: ReorderRequest, trace: TraceLevel = "rules"
) -> DecisionRecord:
    md = ctx.master_data
    item = known_item(md, request.sku, "sku")
    location = known_location(md, request.location, "location")
    decision_id = new_decision_id()
    ruleset = ctx.active("reorder")
    levels = await stock_call(ctx.stock.get_levels([item.sku]))
    pair = (item.sku, location.id)
    given = {pair: request.daily_rate} if request.daily_rate is not None else {}
    rate, source = (await _rates(ctx, [pair], given)).get(pair, (0.0, "none"))
    decision, trace_out, evaluated, facts = _one(
        ctx,
        ruleset,
        item,
        location,
        levels.get(item.sku, {}).get(location.id),
        rate,
        source,
        request.promo_upcoming,
        trace,
    )
    shadow = ruleset.shadow_evaluate(facts, evaluated)
    return await finish(
        ctx,
        decision_id=decision_id,
        kind="reorder",
        request=request,
        decision=decision,
        evaluated=evaluated,
        trace=trace_out,
        shadow=None if shadow is None else shadow.to_dict(),
        timings={"engine_us": round(evaluated.evaluation.elapsed_us, 1)},
        subject=f"{item.sku}@{location.id}",
    )


async def decide_reorder_scan(
    ctx: DecisionContext, request: ReorderScanRequest, trace: TraceLevel = "rules"
) -> DecisionRecord:
    """Every sku-location with a stock row matching the filters, in one decision. The answer lists the
    sku-locations to reorder (all of them with `include_all`); per-item traces only with trace=full."""
    md = ctx.master_data
    for i, sku in enumerate(request.skus):
        known_item(md, sku, f"skus[{i}]")
    for i, loc in enumerate(request.locations):
        known_location(md, loc, f"locations[{i}]")
    decision_id = new_decision_id()
    ruleset = ctx.active("reorder")
    categories = set(request.categories)
    skus = [
        sku
        for sku in (request.skus or sorted(md.items))
        if not categories or md.items[sku].category in categories
    ]
    wanted_locations = set(request.locations)
    wanted_types = set(request.location_types)
    levels = await stock_call(ctx.stock.get_levels(skus)) if skus else {}
    stock_ms = ctx.elapsed_ms()
    pairs: list[tuple[str, str]] = []
    for sku in skus:
        for location_id in sorted(levels.get(sku, {})):
            location = md.locations.get(location_id)
            if location is None:
                continue
            if wanted_locations and location_id not in wanted_locations:
                continue
            if wanted_types and location.type not in wanted_types:
                continue
            pairs.append((sku, location_id))
    given = {(r.sku, r.location): r.daily_rate for r in request.daily_rates}
    rates = await _rates(ctx, pairs, given)
    default = (
        (request.default_daily_rate, "default") if request.default_daily_rate is not None else (0.0, "none")
    )
    item_trace: TraceLevel = "rules" if trace == "full" else "none"
    results: list[dict[str, Any]] = []
    traces: list[dict[str, Any]] = []
    reorders = reviews = 0
    units = 0
    evaluated: Any = None
    for sku, location_id in pairs:
        rate, source = rates.get((sku, location_id), default)
        decision, trace_out, evaluated, _ = _one(
            ctx,
            ruleset,
            md.items[sku],
            md.locations[location_id],
            levels[sku][location_id],
            rate,
            source,
            None,
            item_trace,
        )
        if decision["reorder"]:
            reorders += 1
            units += decision["qty"]
            reviews += decision["review"]
        if decision["reorder"] or request.include_all:
            results.append(decision)
        if trace_out is not None:
            traces.append({"sku": sku, "location": location_id, **trace_out})
    if evaluated is None:
        evaluated = ruleset.evaluate({}, "none")
    summary = {"scanned": len(pairs), "reorder": reorders, "review": reviews, "units": units}
    trace_out_all: dict[str, Any] | None = None
    if trace != "none":
        trace_out_all = {
            "filters": {
                "skus": len(request.skus),
                "locations": request.locations,
                "location_types": request.location_types,
                "categories": request.categories,
            }
        }
        if trace == "full":
            trace_out_all["items"] = traces
    return await finish(
        ctx,
        decision_id=decision_id,
        kind="reorder",
        request=request,
        decision={"summary": summary, "items": results},
        evaluated=evaluated,
        trace=trace_out_all,
        shadow=None,
        timings={"stock_ms": stock_ms},
        subject="scan",
    )
