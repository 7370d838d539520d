"""Allocation decision: evaluate the allocation ruleset on the order, plan with the allocator on live stock,
and optionally reserve the plan in one atomic step, re-planning on fresh stock when a concurrent order
took the units first (at most `MAX_REPLANS` times).

A refusal from a store that reports what it found (Redis) carries the levels of the reserved SKUs as the
reservation's atomic step saw them: the re-plan starts from those, without another read.

Low-stock thresholds come from the availability ruleset for the order's channel, so an allocation never
takes from a location that channel availability reports as empty. The reservation carries each line's
floor, so the store refuses a take that would cross it even if stock moved since the plan.

Daily capacity: a location's `daily_capacity` is shared by every order of a business day (the capacity
calendar's today). The plan reads what reservations already counted at the eligible capped locations, and
the reservation claims its units against those limits in the same atomic step as the stock, so two orders
racing for the last units of a day's capacity never both get them (the loser re-plans).
"""

from __future__ import annotations

import asyncio
from typing import Any

from service.decisions.availability import ChannelPolicies
from service.decisions.common import (
    as_builtins,
    candidate_locations,
    finish,
    known_item,
    known_location,
    location_types,
    locations_fingerprint,
    record_from_log,
    stock_call,
)
from service.decisions.context import DecisionContext, TraceLevel, evaluate
from service.decisions.core import OrderFacts, held_lines
from service.decisions.ids import new_decision_id
from service.decisions.record import DecisionRecord
from service.decisions.schemas import AllocationRequest
from service.domain.allocation import (
    AllocationPlan,
    AllocationPolicy,
    Allocator,
    Destination,
    Fulfillment,
    Location,
    OrderLine,
    allocate,
    plan_to_dict,
)
from service.domain.errors import InvalidInput
from service.errors import Conflict, FieldError
from service.masterdata import MasterData
from service.stock import CapacityClaim, CapacityLimit, ReservationLine, ReservationRequest

MAX_REPLANS = 3


def destination_of(md: MasterData, request: AllocationRequest) -> Destination:
    """Where the order goes (the pickup store when a pickup order names no destination); 422 naming the
    field for an unknown SKU or store, or a destination the fulfilment type does not allow."""
    for i, line in enumerate(request.lines):
        known_item(md, line.sku, f"lines[{i}].sku")
    if request.fulfillment == "pickup":
        if request.pickup_location is None:
            raise InvalidInput("pickup_location", "required when fulfillment is pickup")
        store = known_location(md, request.pickup_location, "pickup_location")
        if request.destination is None:
            return Destination(store.lat, store.lon, store.region)
    elif request.pickup_location is not None:
        raise InvalidInput("pickup_location", "only allowed when fulfillment is pickup")
    if request.destination is None:
        raise InvalidInput("destination", f"required when fulfillment is {request.fulfillment}")
    d = request.destination
    return Destination(d.lat, d.lon, d.region)


def _facts(ctx: DecisionContext, request: AllocationRequest, destination: Destination) -> OrderFacts:
    md = ctx.master_data
    promo = any(md.active_promotions(line.sku, ctx.now, channel=request.channel) for line in request.lines)
    return OrderFacts(
        request.channel,
        request.fulfillment,
        destination.region,
        sum(md.items[line.sku].price * line.qty for line in request.lines),
        len(request.lines),
        sum(line.qty for line in request.lines),
        promo,
        request.customer.tier if request.customer else "standard",
    )


def policy_view(policy: AllocationPolicy) -> dict[str, Any]:
    return {
        "eligible_location_types": sorted(policy.eligible_location_types),
        "floors": dict(policy.floors),
        "ranking": list(policy.effective_ranking),
        "max_splits": policy.max_splits,
        "max_distance_km": policy.max_distance_km,
        "allow_partial": policy.allow_partial,
        "reservation_ttl_seconds": policy.reservation_ttl_seconds,
    }


def candidates_view(plan: AllocationPlan) -> list[dict[str, Any]]:
    """The full trace's `candidates`: per line, every candidate location and why it was or was not used
    (a plan made with `explain`)."""
    return [
        {
            "sku": line["sku"],
            "combinations_searched": line["combinations_searched"],
            "locations": line["candidates"],
        }
        for line in plan_to_dict(plan, with_candidates=True)["lines"]
    ]


def planned_on(
    md: MasterData,
    stock: dict[str, dict[str, int]],
    thresholds: dict[str, dict[str, int]],
    capacity_used: dict[str, int] | None,
) -> dict[str, Any]:
    """What the plan read beyond the request, facts and policy, as the decision log keeps it (with the
    `rules` and `full` traces) so that `service.decisions.explain` can run the allocator again on it: the
    stock view, the low-stock thresholds, the capacity other orders had used, and the fingerprint of the
    locations planned over (they are master data). The mappings are kept as they came, not copied or
    filtered: none is changed after the plan, and encoding them whole costs less than trimming them."""
    inputs: dict[str, Any] = {"stock": stock, "low_stock": thresholds, "locations": locations_fingerprint(md)}
    if capacity_used is not None:
        inputs["capacity_used"] = capacity_used
    return inputs


def _capacity_claim(day: str, plan: AllocationPlan, limits: dict[str, int]) -> CapacityClaim | None:
    """The limits of the capped locations the plan takes from (None when it takes from none)."""
    picked = dict.fromkeys(p.location for line in plan.lines for p in line.picks if p.location in limits)
    if not picked:
        return None
    return CapacityClaim(day, tuple(CapacityLimit(location, limits[location]) for location in picked))


def _capped(
    locations: tuple[Location, ...], policy: AllocationPolicy, fulfillment: Fulfillment
) -> dict[str, int]:
    """location -> daily capacity, for the locations with one that this order could take from."""
    eligible = policy.eligible_location_types
    return {
        loc.id: loc.capacity_remaining
        for loc in locations
        if loc.capacity_remaining is not None
        and loc.type in eligible
        and (fulfillment.type != "pickup" or loc.id == fulfillment.pickup_location)
    }


def _reservation_lines(
    plan: AllocationPlan, policy: AllocationPolicy, types: dict[str, str]
) -> list[ReservationLine]:
    held = held_lines(
        [(line.sku, line.qty) for line in plan.lines],
        [[(p.location, p.qty) for p in line.picks] for line in plan.lines],
    )
    return [
        ReservationLine(sku, location, qty, policy.floor_for(types[location])) for sku, location, qty in held
    ]


async def _replay(ctx: DecisionContext, request: AllocationRequest) -> DecisionRecord | None:
    """The logged decision for this idempotency key: answered again for the same order, a conflict for
    another one, None when the log has none (yet)."""
    assert request.idempotency_key is not None
    prior = await ctx.log.find_by_idempotency_key("allocation", request.idempotency_key)
    if prior is None:
        return None
    if prior["request"] != as_builtins(request):
        raise Conflict(
            "the idempotency key was already used with another order",
            [FieldError("idempotency_key", "already used with another request body")],
            title="Idempotency key reused",
        )
    return record_from_log(prior)


async def decide_allocation(
    ctx: DecisionContext, request: AllocationRequest, trace: TraceLevel = "rules"
) -> DecisionRecord:
    destination = destination_of(ctx.master_data, request)
    decision_id = new_decision_id()
    md = ctx.master_data
    facts = _facts(ctx, request, destination).nested()
    evaluated, shadow = evaluate(ctx, "allocation", facts, trace)
    policy = evaluated.evaluation.derive(AllocationPolicy.from_result)
    fulfillment = Fulfillment(request.fulfillment, request.pickup_location)
    locations = candidate_locations(md)
    # one allocator per snapshot: what it works out per policy and destination serves later orders
    allocator = md.derived(Allocator, lambda: Allocator.over(locations))
    types = location_types(md)
    skus = list(dict.fromkeys(line.sku for line in request.lines))
    channel = ChannelPolicies(ctx, request.channel, "none")
    # thresholds matter only where the allocation ruleset lets the channel take stock
    eligible_types = frozenset(policy.eligible_location_types)
    thresholds = {sku: channel.low_stock_thresholds(md.items[sku], eligible_types) for sku in skus}
    lines = [OrderLine(line.sku, line.qty) for line in request.lines]
    capped = _capped(locations, policy, fulfillment)
    day = ctx.capacity_day if capped else ""  # the business day matters only where capacity is counted
    used: dict[str, int] = {}
    rules_ms = ctx.elapsed_ms()
    reservation: dict[str, Any] | None = None
    replans = 0
    reserve_failed: str | None = None
    # a refused reservation's view of the order's SKUs, taken in its own atomic step (None: read again)
    seen: dict[str, dict[str, int]] | None = None
    while True:
        if seen is not None:
            stock = seen
        elif capped:
            # both reads at once: over Redis they share one round trip on the pipelined connection
            stock, used = await asyncio.gather(
                stock_call(ctx.stock.get_available(skus)),
                stock_call(ctx.stock.get_capacity_used(day, list(capped))),
            )
        else:
            stock = await stock_call(ctx.stock.get_available(skus))
        plan = allocate(
            lines,
            locations,
            stock,
            policy,
            fulfillment,
            destination,
            low_stock_thresholds=thresholds,
            capacity_used=used,
            explain=trace == "full",
            allocator=allocator,
        )
        if not request.reserve or plan.splits == 0:
            break
        key = request.idempotency_key or decision_id
        # the log is read for a key only when the store has seen it: a retry is rare, a lookup per order is not
        retry = replans == 0 and request.idempotency_key is not None
        try:
            result = await stock_call(
                ctx.stock.reserve(
                    ReservationRequest(
                        order_id=request.order_id,
                        channel=request.channel,
                        # each re-plan is a different body, so it needs its own key
                        idempotency_key=key if replans == 0 else f"{key}#replan-{replans}",
                        lines=tuple(_reservation_lines(plan, policy, types)),
                        ttl_seconds=policy.reservation_ttl_seconds,
                        allow_partial=False,
                        capacity=_capacity_claim(day, plan, capped) if capped else None,
                    )
                )
            )
        except Conflict:
            # the key holds another body: the same order planned on moved stock, or another order
            replayed = await _replay(ctx, request) if retry else None
            if replayed is None:
                raise
            return replayed
        if result.replayed and retry:
            replayed = await _replay(ctx, request)
            if replayed is not None:
                return replayed
        if result.reservation is not None and not result.short:
            held = result.reservation
            reservation = {
                "id": held.id,
                "status": held.status,
                "expires_at": held.expires_at.isoformat(),
                "lines": [{"sku": r.sku, "location": r.location, "qty": r.qty} for r in held.lines],
            }
            break
        if result.reservation is not None:
            await stock_call(ctx.stock.release(result.reservation.id))
        # the next plan needs no read when the refusal says what it found of every SKU of the order (and the
        # plan counts no capacity, which the refusal does not report)
        found = result.available
        seen = found if found is not None and not capped and all(sku in found for sku in skus) else None
        if replans >= MAX_REPLANS:
            reserve_failed = f"stock moved under concurrent orders; gave up after {replans} re-plans"
            break
        replans += 1
    view = plan_to_dict(plan, with_candidates=False)
    status = "allocated" if plan.complete else ("partial" if plan.splits else "unallocated")
    if reserve_failed is not None:
        status = "unreserved"
    decision: dict[str, Any] = {
        "order_id": request.order_id,
        "channel": request.channel,
        "fulfillment": request.fulfillment,
        "status": status,
        "lines": view["lines"],
        "splits": view["splits"],
        "unallocated": plan.unallocated,
        "reason": evaluated.evaluation.result.get("reason"),
        "reservation": reservation,
        "replans": replans,
    }
    if reserve_failed is not None:
        decision["reserve_failed"] = reserve_failed
    trace_out: dict[str, Any] | None = None
    if trace != "none":
        trace_out = {"rules": evaluated.evaluation.trace, "facts": facts, "policy": policy_view(policy)}
        if capped:
            # what other orders had already taken of the capped locations' capacity when the plan was made:
            # those the plan takes from, or every one with the full trace
            picked = {p.location for line in plan.lines for p in line.picks}
            trace_out["capacity"] = {
                "day": day,
                "locations": {
                    loc: {"daily": daily, "used": used.get(loc, 0)}
                    for loc, daily in capped.items()
                    if trace == "full" or loc in picked
                },
            }
        if trace == "full":
            trace_out["candidates"] = candidates_view(plan)
    return await finish(
        ctx,
        decision_id=decision_id,
        kind="allocation",
        request=request,
        decision=decision,
        evaluated=evaluated,
        trace=trace_out,
        shadow=shadow,
        timings={"rules_ms": rules_ms, "engine_us": round(evaluated.evaluation.elapsed_us, 1)},
        subject=request.order_id,
        idempotency_key=request.idempotency_key if request.reserve else None,
        inputs=None if trace == "none" else planned_on(md, stock, thresholds, used if capped else None),
    )
