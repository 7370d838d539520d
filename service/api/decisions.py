"""Decision endpoints: allocation, availability, reorder (one and scan), transfer, markdown, and the
decision log by id. Thin: decode, build the context, call the use case, answer its record."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar, cast

from litestar import Request, Router, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from service.api.body import decode_body
from service.api.openapi import answers, json_body, json_response, links
from service.api.responses import DecisionOut, LoggedDecisionOut
from service.decisions.allocation import decide_allocation
from service.decisions.approvals import decide_markdown, decide_transfer
from service.decisions.availability import decide_availability
from service.decisions.context import DecisionContext, TraceLevel, context_from
from service.decisions.record import DecisionRecord
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
    services: Services = request.app.state.services
    now = datetime.now(UTC)
    return context_from(services, principal_of(request).name, now, await services.master_data.get(now))


async def _decide(
    request: Request[Any, Any, Any],
    trace: str | None,
    schema: type[T],
    use_case: Callable[[DecisionContext, T, TraceLevel], Awaitable[DecisionRecord]],
) -> dict[str, Any]:
    """Every decision endpoint: check the trace level, decode the body strictly, run the use case."""
    level = _trace(trace)
    body = await decode_body(request, schema)
    return (await use_case(await _context(request), body, level)).response()


@post("/decisions/allocation", opt=requires("decide"), operation_id="decideAllocation", status_code=200)
@json_body(
    AllocationRequest,
    example={
        "order_id": "WEB-1003",
        "channel": "ecommerce",
        "fulfillment": "ship",
        "destination": {"lat": 53.48, "lon": -2.24, "region": "north"},
        "lines": [{"sku": "SKU-GUIDE", "qty": 2}],
    },
)
@answers(409)  # `reserve` with an idempotency key used before for another order
@json_response(DecisionOut)
@links(getDecision=LOGGED)
async def allocation(request: Request[Any, Any, Any], trace: Trace = None) -> dict[str, Any]:
    return await _decide(request, trace, AllocationRequest, decide_allocation)


@post("/decisions/availability", opt=requires("decide"), operation_id="decideAvailability", status_code=200)
@json_body(AvailabilityRequest, example={"channel": "ecommerce", "skus": ["SKU-GUIDE"]})
@json_response(DecisionOut)
@links(getDecision=LOGGED)
async def availability(request: Request[Any, Any, Any], trace: Trace = None) -> dict[str, Any]:
    return await _decide(request, trace, AvailabilityRequest, decide_availability)


@post("/decisions/reorder", opt=requires("decide"), operation_id="decideReorder", status_code=200)
@json_body(ReorderRequest, example={"sku": "SKU-GUIDE", "location": "STORE-MAN-01", "daily_rate": 1.5})
@json_response(DecisionOut)
@links(getDecision=LOGGED)
async def reorder(request: Request[Any, Any, Any], trace: Trace = None) -> dict[str, Any]:
    return await _decide(request, trace, ReorderRequest, decide_reorder_one)


@post("/decisions/reorder/scan", opt=requires("decide"), operation_id="decideReorderScan", status_code=200)
@json_body(ReorderScanRequest)
@json_response(DecisionOut)
@links(getDecision=LOGGED)
async def reorder_scan(request: Request[Any, Any, Any], trace: Trace = None) -> dict[str, Any]:
    return await _decide(request, trace, ReorderScanRequest, decide_reorder_scan)


@post("/decisions/transfer", opt=requires("decide"), operation_id="decideTransfer", status_code=200)
@json_body(TransferRequest)
@json_response(DecisionOut)
@links(getDecision=LOGGED)
async def transfer(request: Request[Any, Any, Any], trace: Trace = None) -> dict[str, Any]:
    return await _decide(request, trace, TransferRequest, decide_transfer)


@post("/decisions/markdown", opt=requires("decide"), operation_id="decideMarkdown", status_code=200)
@json_body(MarkdownRequest)
@json_response(DecisionOut)
@links(getDecision=LOGGED)
async def markdown(request: Request[Any, Any, Any], trace: Trace = None) -> dict[str, Any]:
    return await _decide(request, trace, MarkdownRequest, decide_markdown)


@get("/decisions/{decision_id:str}", opt=requires("decide", "planner"), operation_id="getDecision")
@json_response(LoggedDecisionOut)
async def get_decision(services: NamedDependency[Services], decision_id: FromPath[str]) -> dict[str, Any]:
    found = await services.decision_log.get(decision_id)
    if found is None:
        raise NotFound(f"no decision {decision_id}", [FieldError("decision_id", "not found")])
    return found


router = Router(
    path="/v1",
    route_handlers=[allocation, availability, reorder, reorder_scan, transfer, markdown, get_decision],
    tags=["decisions"],
)
