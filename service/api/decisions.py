"""Decision endpoints: allocation, availability, reorder (one and scan), transfer, markdown, and the
decision log by id. Thin: decode, build the context, call the use case, answer its record."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar, cast

from litestar import Request, Router, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from service.api.answers import Answer, Timestamp
from service.api.direct import direct
from service.api.encoded import JsonAnswer
from service.api.openapi import answers, example, links
from service.decisions.allocation import decide_allocation
from service.decisions.approvals import decide_markdown, decide_transfer
from service.decisions.availability import decide_availability
from service.decisions.context import DecisionContext, TraceLevel, context_from
from service.decisions.record import DecisionRecord, iso_time
from service.decisions.reorder import decide_reorder_one, decide_reorder_scan
from service.decisions.schemas import (
    AllocationRequest,
    AvailabilityRequest,
    MarkdownRequest,
    ReorderRequest,
    ReorderScanRequest,
    TransferRequest,
)
from service.errors import FieldError, Invalid, NotFound
from service.security import principal_of, requires
from service.services import Services


class DecisionOut(Answer, omit_defaults=True):
    """A decision: its id, kind, what was decided, the ruleset version that decided it, trace, timings;
    `shadow` when a shadow version ran beside the active one, `replayed` on an idempotent replay."""

    decision_id: str
    kind: str
    created_at: Timestamp
    decision: dict[str, Any]
    ruleset: dict[str, Any]
    trace: dict[str, Any] | None
    timings: dict[str, float]
    shadow: dict[str, Any] | None = None
    replayed: bool = False


class LoggedDecisionOut(DecisionOut, kw_only=True):
    """A decision as logged: the answer plus the request it answered and who asked."""

    request: dict[str, Any]
    actor: str | None = None
    # what the decision read beyond its request and facts, when it was recorded (an allocation traced at
    # `rules` or `full`: the stock it planned on; see docs/decisions.md)
    inputs: dict[str, Any] | None = None


def decision_out(record: DecisionRecord) -> DecisionOut:
    """A use case's record as the answer. Built by the constructor, not converted: the values go out as
    the record holds them, and a key of `extra` the Struct does not declare fails here, loudly."""
    return DecisionOut(
        decision_id=record.id,
        kind=record.kind,
        created_at=iso_time(record.created_at),
        decision=record.decision,
        ruleset=record.ruleset,
        trace=record.trace,
        timings=record.timings,
        shadow=record.shadow,
        **record.extra,
    )


TRACE_LEVELS = ("none", "rules", "full")
Trace = Annotated[
    str | None,
    QueryParameter(
        name="trace",
        description="how much of the reasoning to return: none, rules (default) or full",
        schema_extra={"enum": list(TRACE_LEVELS)},
    ),
]
LOGGED = {"decision_id": "$response.body#/decision_id"}  # every decision is logged under its id
T = TypeVar("T")


def _trace(value: str | None) -> TraceLevel:
    level = value or "rules"
    if level not in TRACE_LEVELS:
        raise Invalid(
            f"trace: expected one of {', '.join(TRACE_LEVELS)}",
            [FieldError("trace", "expected none, rules or full")],
        )
    return cast(TraceLevel, level)


async def _context(request: Request[Any, Any, Any]) -> DecisionContext:
    # start_services opened the stock store, the rules registry and the decision log before serving;
    # the hot decision handlers read the services from the app state instead of asking for the dependency
    # (by key: by attribute the state object fails a lookup first, a few microseconds)
    services: Services = request.app.state["services"]
    now = datetime.now(UTC)
    return context_from(services, principal_of(request).name, now, await services.master_data.get(now))


async def _decide(
    request: Request[Any, Any, Any],
    trace: str | None,
    body: T,
    use_case: Callable[[DecisionContext, T, TraceLevel], Awaitable[DecisionRecord]],
) -> DecisionOut:
    """Every decision endpoint: check the trace level, run the use case on the decoded body."""
    level = _trace(trace)
    return decision_out(await use_case(await _context(request), body, level))


DECIDED = "The decision, logged under `decision_id`"
# answered by the app's middleware directly (`service.api.direct`): the shape of every handler below
DECISION = {**requires("decide"), **links(getDecision=LOGGED), **direct()}


ALLOCATION_EXAMPLE = {
    "order_id": "WEB-1003",
    "channel": "ecommerce",
    "fulfillment": "ship",
    "destination": {"lat": 53.48, "lon": -2.24, "region": "north"},
    "lines": [{"sku": "SKU-GUIDE", "qty": 2}],
}


@post(
    "/decisions/allocation",
    opt={**DECISION, **answers(409)},  # `reserve` with an idempotency key used before for another order
    operation_id="decideAllocation",
    response_description=DECIDED,
    status_code=200,
)
async def allocation(
    request: Request[Any, Any, Any],
    data: Annotated[AllocationRequest, example(ALLOCATION_EXAMPLE)],
    trace: Trace = None,
) -> DecisionOut:
    return await _decide(request, trace, data, decide_allocation)


@post(
    "/decisions/availability",
    opt=DECISION,
    operation_id="decideAvailability",
    response_description=DECIDED,
    status_code=200,
)
async def availability(
    request: Request[Any, Any, Any],
    data: Annotated[AvailabilityRequest, example({"channel": "ecommerce", "skus": ["SKU-GUIDE"]})],
    trace: Trace = None,
) -> DecisionOut:
    return await _decide(request, trace, data, decide_availability)


@post(
    "/decisions/reorder",
    opt=DECISION,
    operation_id="decideReorder",
    response_description=DECIDED,
    status_code=200,
)
async def reorder(
    request: Request[Any, Any, Any],
    data: Annotated[
        ReorderRequest, example({"sku": "SKU-GUIDE", "location": "STORE-MAN-01", "daily_rate": 1.5})
    ],
    trace: Trace = None,
) -> DecisionOut:
    return await _decide(request, trace, data, decide_reorder_one)


@post(
    "/decisions/reorder/scan",
    opt=DECISION,
    operation_id="decideReorderScan",
    response_description=DECIDED,
    status_code=200,
)
async def reorder_scan(
    request: Request[Any, Any, Any], data: JSONBody[ReorderScanRequest], trace: Trace = None
) -> DecisionOut:
    return await _decide(request, trace, data, decide_reorder_scan)


@post(
    "/decisions/transfer",
    opt=DECISION,
    operation_id="decideTransfer",
    response_description=DECIDED,
    status_code=200,
)
async def transfer(
    request: Request[Any, Any, Any], data: JSONBody[TransferRequest], trace: Trace = None
) -> DecisionOut:
    return await _decide(request, trace, data, decide_transfer)


@post(
    "/decisions/markdown",
    opt=DECISION,
    operation_id="decideMarkdown",
    response_description=DECIDED,
    status_code=200,
)
async def markdown(
    request: Request[Any, Any, Any], data: JSONBody[MarkdownRequest], trace: Trace = None
) -> DecisionOut:
    return await _decide(request, trace, data, decide_markdown)


@get(
    "/decisions/{decision_id:str}",
    opt=requires("decide", "planner"),
    operation_id="getDecision",
    response_description="The decision as logged",
)
async def get_decision(services: NamedDependency[Services], decision_id: FromPath[str]) -> LoggedDecisionOut:
    """The decision as logged."""
    found = await services.decision_log.get(decision_id)
    if found is None:
        raise NotFound(f"no decision {decision_id}", [FieldError("decision_id", "not found")])
    return LoggedDecisionOut(**found)


router = Router(
    path="/v1",
    route_handlers=[allocation, availability, reorder, reorder_scan, transfer, markdown, get_decision],
    tags=["decisions"],
    response_class=JsonAnswer,
)
