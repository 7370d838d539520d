"""Exceptions: what needs a person (negative inventory, oversell risk, delayed receipts, stuck approvals,
failed deliveries), with its state and owner. docs/approvals.md, "Exceptions".

`GET /v1/exceptions` filters by kind, state, location and age, newest first, a page at a time;
`POST /v1/exceptions/{id}/acknowledge` takes ownership and `.../resolve` closes one.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Router, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from service.api.openapi import OptionalBody, answers
from service.errors import Conflict, FieldError, Invalid, NotFound
from service.security import principal_of, requires
from service.services import Services
from service.workflow.exceptions import (
    STATES,
    ExceptionFilter,
    ExceptionStateError,
    UnknownException,
    acknowledge,
    as_dict,
    listing,
    resolve,
)

Kind = Literal["negative_inventory", "oversell_risk", "delayed_receipt", "stuck_approval", "failed_delivery"]
DURATION = re.compile(r"^(?P<n>\d{1,6})(?P<unit>[smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
Person = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Comment = Annotated[str, msgspec.Meta(max_length=2000)]


class ExceptionOut(msgspec.Struct):
    id: str
    kind: str
    key: str
    state: str
    location: str | None
    sku: str | None
    detail: dict[str, Any]
    assignee: str | None
    comment: str | None
    opened_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    resolved_by: str | None


class ExceptionsOut(msgspec.Struct):
    exceptions: list[ExceptionOut]
    next: str | None  # pass as `before` for the next page


class AcknowledgeIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    assignee: Person | None = None  # the caller when left out
    comment: Comment | None = None


class ResolveIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    comment: Comment | None = None
    assignee: Person | None = None


BARE_ACKNOWLEDGEMENT = AcknowledgeIn()  # sent without a body
BARE_RESOLUTION = ResolveIn()


def _out(record: Any) -> ExceptionOut:
    return msgspec.convert(as_dict(record), ExceptionOut)


def duration(text: str, field: str) -> timedelta:
    match = DURATION.match(text)
    if match is None:
        reason = "a duration such as 30m, 4h or 2d (s, m, h, d)"
        raise Invalid(f"{field}: {reason}", [FieldError(field, reason)])
    return timedelta(**{UNITS[match["unit"]]: int(match["n"])})


@get("/exceptions", opt=requires("stock", "planner"), operation_id="listExceptions")
async def list_exceptions(
    services: NamedDependency[Services],
    kind: FromQuery[Kind | None] = None,
    # `state` is a name Litestar keeps for the app state: read under another name, checked here
    wanted_state: Annotated[
        str | None, QueryParameter(name="state", description="open, acknowledged or resolved", max_length=16)
    ] = None,
    location: Annotated[str | None, QueryParameter(max_length=64)] = None,
    older_than: Annotated[
        str | None, QueryParameter(description="opened at least this long ago: 30m, 4h, 2d", max_length=10)
    ] = None,
    before: Annotated[
        str | None, QueryParameter(description="the `next` of the previous page", max_length=36)
    ] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
) -> ExceptionsOut:
    """Newest first."""
    if wanted_state is not None and wanted_state not in STATES:
        reason = f"expected one of {', '.join(STATES)}"
        raise Invalid(f"query.state: {reason}", [FieldError("query.state", reason)])
    cutoff = None if older_than is None else datetime.now(UTC) - duration(older_than, "query.older_than")
    wanted = ExceptionFilter(kind, wanted_state, location, cutoff, before, limit)
    async with services.sessions() as session:
        rows = list((await session.execute(listing(wanted))).scalars())
    page = rows[:limit]
    return ExceptionsOut([_out(row) for row in page], page[-1].id if len(rows) > limit else None)


async def _act(
    services: Services, request: Request[Any, Any, Any], exception_id: str, body: AcknowledgeIn | ResolveIn
) -> ExceptionOut:
    now = datetime.now(UTC)
    actor = principal_of(request).name
    try:
        async with services.sessions() as session, session.begin():
            if isinstance(body, AcknowledgeIn):
                record = await acknowledge(
                    session, exception_id, actor=actor, assignee=body.assignee, comment=body.comment, now=now
                )
            else:
                record = await resolve(
                    session, exception_id, actor=actor, assignee=body.assignee, comment=body.comment, now=now
                )
    except UnknownException as error:
        raise NotFound(str(error), [FieldError("id", "unknown")]) from None
    except ExceptionStateError as error:
        raise Conflict(str(error), [FieldError("state", f"exception is {error.state}")]) from None
    return _out(record)


@post(
    "/exceptions/{exception_id:str}/acknowledge",
    opt={**requires("stock", "planner"), **answers(409)},
    operation_id="acknowledgeException",
    status_code=200,
    operation_class=OptionalBody,
)
async def acknowledge_exception(
    services: NamedDependency[Services],
    request: Request[Any, Any, Any],
    exception_id: FromPath[str],
    data: JSONBody[AcknowledgeIn] = BARE_ACKNOWLEDGEMENT,
) -> ExceptionOut:
    """open -> acknowledged, owned by `assignee` (the caller when left out)."""
    return await _act(services, request, exception_id, data)


@post(
    "/exceptions/{exception_id:str}/resolve",
    opt={**requires("stock", "planner"), **answers(409)},
    operation_id="resolveException",
    status_code=200,
    operation_class=OptionalBody,
)
async def resolve_exception(
    services: NamedDependency[Services],
    request: Request[Any, Any, Any],
    exception_id: FromPath[str],
    data: JSONBody[ResolveIn] = BARE_RESOLUTION,
) -> ExceptionOut:
    """open or acknowledged -> resolved. If its condition still holds, the next check opens a new one."""
    return await _act(services, request, exception_id, data)


router = Router(
    path="/v1",
    route_handlers=[list_exceptions, acknowledge_exception, resolve_exception],
    tags=["exceptions"],
)
