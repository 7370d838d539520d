"""Transfer and markdown decisions: enrich the request with live stock, master data and promotions,
evaluate the ruleset, then route so the requester never approves their own request.

A transfer's source floor is what the availability ruleset gives the pseudo-channel `transfer` at the
source location: the stock a location keeps for its own shoppers when asked to send some away.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from service.decisions.availability import ChannelPolicies
from service.decisions.common import finish, known_item, known_location, stock_call
from service.decisions.context import DecisionContext, TraceLevel, evaluate
from service.decisions.core import decide_approval
from service.decisions.ids import new_decision_id
from service.decisions.record import DecisionRecord
from service.decisions.schemas import MarkdownRequest, TransferRequest
from service.domain.approval import ApprovalDecision, Requester
from service.domain.errors import InvalidInput
from service.domain.markdown import MARKDOWN_CHAIN, markdown_facts
from service.domain.markdown import MarkdownRequest as MarkdownInput
from service.domain.transfer import TRANSFER_CHAIN, TRANSFER_CHANNEL, TransferSide, transfer_facts, unit_value
from service.domain.transfer import TransferRequest as TransferInput
from service.masterdata import ItemRecord, LocationRecord


def transfer_floor(ctx: DecisionContext, item: ItemRecord, source: LocationRecord) -> int:
    """The stock `source` keeps for its own shoppers when asked to send `item` away."""
    return ChannelPolicies(ctx, TRANSFER_CHANNEL, "none").policy(item, source).floor


def _approval_trace(
    evaluated: Any, facts: dict[str, Any], approval: ApprovalDecision, requester: Requester, trace: TraceLevel
) -> dict[str, Any] | None:
    if trace == "none":
        return None
    return {
        "rules": evaluated.evaluation.trace,
        "facts": facts,
        "ruleset_result": evaluated.evaluation.result,
        "requester": {"id": requester.id, "role": requester.role},
        "requester_substitutions": [s.to_dict() for s in approval.substitutions],
    }


async def decide_transfer(
    ctx: DecisionContext, request: TransferRequest, trace: TraceLevel = "rules"
) -> DecisionRecord:
    md = ctx.master_data
    item = known_item(md, request.sku, "sku")
    source = known_location(md, request.from_location, "from_location")
    destination = known_location(md, request.to_location, "to_location")
    if source.id == destination.id:
        raise InvalidInput("to_location", "must differ from from_location")
    decision_id = new_decision_id()
    available = (await stock_call(ctx.stock.get_available([item.sku]))).get(item.sku, {})
    floor = transfer_floor(ctx, item, source)

    def side(record: Any) -> TransferSide:
        return TransferSide(
            record.id,
            record.type,
            record.region,
            available.get(record.id, 0),
            len(md.active_promotions(item.sku, ctx.now, record.id)),
        )

    facts = transfer_facts(
        TransferInput(request.transfer_id, item.sku, request.qty, request.reason, request.requested_by.role),
        side(source),
        side(destination),
        source_floor=floor,
        unit_value=unit_value(item.cost, item.price),
    )
    evaluated, shadow = evaluate(ctx, "transfer", facts, trace)
    requester = Requester(request.requested_by.id, request.requested_by.role)
    approval = decide_approval(evaluated.evaluation.result, requester, TRANSFER_CHAIN)
    decision = {
        "transfer_id": request.transfer_id,
        "sku": item.sku,
        "qty": request.qty,
        "from_location": source.id,
        "to_location": destination.id,
        **approval.to_dict(),
    }
    return await finish(
        ctx,
        decision_id=decision_id,
        kind="transfer",
        request=request,
        decision=decision,
        evaluated=evaluated,
        trace=_approval_trace(evaluated, facts, approval, requester, trace),
        shadow=shadow,
        timings={"engine_us": round(evaluated.evaluation.elapsed_us, 1)},
        subject=request.transfer_id,
    )


def _season_end(sku: str, stored: str | None) -> date | None:
    """The item's season end; one stored before PUT /v1/items checked dates is the caller's to correct."""
    if not stored:
        return None
    try:
        return date.fromisoformat(stored)
    except ValueError:
        raise InvalidInput(
            "sku", f"item {sku!r} has season_end {stored!r}, not a date; correct it with PUT /v1/items"
        ) from None


async def decide_markdown(
    ctx: DecisionContext, request: MarkdownRequest, trace: TraceLevel = "rules"
) -> DecisionRecord:
    md = ctx.master_data
    item = known_item(md, request.sku, "sku")
    for i, loc in enumerate(request.locations or []):
        known_location(md, loc, f"locations[{i}]")
    season_end = _season_end(item.sku, item.season_end)
    decision_id = new_decision_id()
    available = (await stock_call(ctx.stock.get_available([item.sku]))).get(item.sku, {})
    wanted = set(request.locations) if request.locations else None
    chosen = {loc: units for loc, units in available.items() if wanted is None or loc in wanted}
    units = sum(chosen.values())
    rate = request.daily_rate
    rate_source = "request"
    if rate is None:
        rate, rate_source = 0.0, "none"
        if ctx.demand is not None and chosen:
            known = await ctx.demand.rates([(item.sku, loc) for loc in chosen])
            if known:
                rate, rate_source = sum(known.values()), "ledger"
    facts = markdown_facts(
        MarkdownInput(
            request.markdown_id,
            item.sku,
            request.current_price,
            request.proposed_price,
            request.effective_from,
            request.requested_by.role,
        ),
        cost=item.cost,
        category=item.category,
        units=units,
        daily_rate=rate,
        season_end=season_end,
        promo_active=bool(md.active_promotions(item.sku, ctx.now)),
    )
    evaluated, shadow = evaluate(ctx, "markdown", facts, trace)
    requester = Requester(request.requested_by.id, request.requested_by.role)
    approval = decide_approval(evaluated.evaluation.result, requester, MARKDOWN_CHAIN)
    decision = {"markdown_id": request.markdown_id, "sku": item.sku, **approval.to_dict()}
    trace_out = _approval_trace(evaluated, facts, approval, requester, trace)
    if trace_out is not None:
        trace_out["demand"] = {"daily_rate": rate, "source": rate_source}
        trace_out["locations"] = sorted(chosen)
    return await finish(
        ctx,
        decision_id=decision_id,
        kind="markdown",
        request=request,
        decision=decision,
        evaluated=evaluated,
        trace=trace_out,
        shadow=shadow,
        timings={"engine_us": round(evaluated.evaluation.elapsed_us, 1)},
        subject=request.markdown_id,
    )
