"""Transfer and markdown requests, and the approvers' side of their cases.

`POST /v1/transfers` and `/v1/markdowns` file a request (decided by the same decision as
`/v1/decisions/transfer|markdown`); `GET` on them shows the request, its decision and its case with every
step. `POST /v1/approvals/{id}/approve|reject` acts on a case as the person the API key names, under a
role the key carries; `GET /v1/approvals` is the inbox. Thin: decode, call `service.workflow`, answer.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from service.api.answers import Answer, Timestamp
from service.api.decisions import _trace
from service.api.direct import direct
from service.api.encoded import JsonAnswer
from service.api.openapi import OptionalBody, answers
from service.decisions.schemas import MarkdownRequest, TransferRequest
from service.domain.cases import APPROVER_ROLES
from service.security import principal_of, requires
from service.services import Services
from service.workflow.cases import Workflow
from service.workflow.inbox import inbox
from service.workflow.requests import file_request, get_request

FILE_ROLES = ("decide", "requester")
READ_ROLES = ("decide", "requester", "planner", *APPROVER_ROLES)
Comment = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


class ApproveIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    comment: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


NO_COMMENT = ApproveIn()  # an approval sent without a body


class RejectIn(msgspec.Struct, forbid_unknown_fields=True):
    comment: Comment


class StepOut(Answer):
    at: Timestamp
    action: str  # opened | approved | rejected | escalated | expired | executed | blocked | received
    actor: str
    role: str | None
    comment: str | None
    detail: dict[str, Any]


class CaseSummaryOut(Answer):
    """An approval case as the inbox lists it."""

    id: str
    kind: str
    subject: str
    requested_by: str
    decision_id: str
    status: str
    approvers: list[str]
    approvals_required: int
    escalation: list[str]
    escalation_level: int
    sla_hours: float | None
    sla_due_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    closed_at: Timestamp | None
    outcome_reason: str | None
    version: int
    overdue: bool


class ApprovalOut(Answer):
    person: str
    role: str
    at: Timestamp


class CaseOut(CaseSummaryOut, kw_only=True):
    """An approval case with how its approvals add up and every step."""

    approval: str  # any | all
    approvals: list[ApprovalOut]
    steps: list[StepOut]


class RequestOut(Answer):
    """A filed transfer or markdown request: the body, its decision (with trace) and its case."""

    request_id: str
    kind: str
    status: str
    requested_by: str
    created_at: Timestamp
    request: dict[str, Any]
    decision: dict[str, Any]
    shipment_id: str | None
    case: CaseOut


class InboxOut(Answer):
    cases: list[CaseSummaryOut]
    next_cursor: str | None


def workflow_of(request: Request[Any, Any, Any]) -> Workflow:
    services: Services = request.app.state["services"]  # by key: by attribute the state fails a lookup first
    workflow: Workflow = services.workflow
    return workflow


async def _file(
    request: Request[Any, Any, Any], kind: str, body: Any, trace: str | None
) -> Response[RequestOut]:
    level = _trace(trace)
    view, replayed = await file_request(workflow_of(request), kind, body, principal_of(request).name, level)
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(msgspec.convert(view, RequestOut), status_code=200 if replayed else 201, headers=headers)


# the workflow builds its views as dicts; the handlers convert them to these Structs at the edge
# (`forbid_unknown_fields` on `Answer`: a key the Struct does not declare fails, it is not dropped)
FILED = {
    200: ResponseSpec(RequestOut, description="Filed before with the same body: the same answer, replayed")
}
# the request id was filed before with another body
A_CASE = "The approval case"
FILING = {**requires(*FILE_ROLES), **answers(409)}


@post(
    "/transfers",
    opt=FILING,
    operation_id="fileTransfer",
    status_code=201,
    responses=FILED,
    response_description="The request was filed",
)
async def file_transfer(
    request: Request[Any, Any, Any], data: JSONBody[TransferRequest], trace: FromQuery[str | None] = None
) -> Response[RequestOut]:
    return await _file(request, "transfer", data, trace)


@post(
    "/markdowns",
    opt=FILING,
    operation_id="fileMarkdown",
    status_code=201,
    responses=FILED,
    response_description="The request was filed",
)
async def file_markdown(
    request: Request[Any, Any, Any], data: JSONBody[MarkdownRequest], trace: FromQuery[str | None] = None
) -> Response[RequestOut]:
    return await _file(request, "markdown", data, trace)


@get(
    "/transfers/{request_id:str}",
    opt=requires(*READ_ROLES),
    operation_id="getTransfer",
    response_description="The request and its approval case",
)
async def get_transfer(request: Request[Any, Any, Any], request_id: FromPath[str]) -> RequestOut:
    return msgspec.convert(await get_request(workflow_of(request), "transfer", request_id), RequestOut)


@get(
    "/markdowns/{request_id:str}",
    opt=requires(*READ_ROLES),
    operation_id="getMarkdown",
    response_description="The request and its approval case",
)
async def get_markdown(request: Request[Any, Any, Any], request_id: FromPath[str]) -> RequestOut:
    return msgspec.convert(await get_request(workflow_of(request), "markdown", request_id), RequestOut)


@get(
    "/approvals",
    opt=requires(*READ_ROLES),
    operation_id="listApprovals",
    response_description="A page of the inbox",
)
async def list_approvals(
    request: Request[Any, Any, Any],
    role: Annotated[str | None, Parameter(description="cases this role may act on now")] = None,
    status: Annotated[str, Parameter(description="case status")] = "pending",
    overdue: Annotated[bool | None, Parameter(description="past (true) or within (false) the SLA")] = None,
    kind: Annotated[str | None, Parameter(description="transfer or markdown")] = None,
    limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Parameter(description="next_cursor of the previous page")] = None,
) -> InboxOut:
    """The inbox: cases oldest first, `limit` per page; `next_cursor` fetches the next page."""
    page = await inbox(
        workflow_of(request),
        role=role,
        status=status,
        overdue=overdue,
        kind=kind,
        limit=limit,
        cursor=cursor,
    )
    return msgspec.convert(page, InboxOut)


@get(
    "/approvals/{case_id:str}",
    opt=requires(*READ_ROLES),
    operation_id="getApproval",
    response_description=A_CASE,
)
async def get_approval(request: Request[Any, Any, Any], case_id: FromPath[str]) -> CaseOut:
    workflow = workflow_of(request)
    async with workflow.sessions() as session:
        return msgspec.convert(await workflow.view(session, case_id), CaseOut)


# answered by the app's middleware directly (`service.api.direct`), like the decision endpoints
ACTING = {**requires(*APPROVER_ROLES), **direct()}


@post(
    "/approvals/{case_id:str}/approve",
    opt=ACTING,
    response_class=JsonAnswer,
    operation_id="approveCase",
    status_code=200,
    response_description=A_CASE,
    operation_class=OptionalBody,
)
async def approve_case(
    request: Request[Any, Any, Any], case_id: FromPath[str], data: JSONBody[ApproveIn] = NO_COMMENT
) -> CaseOut:
    principal = principal_of(request)
    case = await workflow_of(request).act(case_id, principal.name, principal.has, "approve", data.comment)
    return msgspec.convert(case, CaseOut)


@post(
    "/approvals/{case_id:str}/reject",
    opt=ACTING,
    response_class=JsonAnswer,
    operation_id="rejectCase",
    status_code=200,
    response_description=A_CASE,
)
async def reject_case(
    request: Request[Any, Any, Any], case_id: FromPath[str], data: JSONBody[RejectIn]
) -> CaseOut:
    principal = principal_of(request)
    case = await workflow_of(request).act(case_id, principal.name, principal.has, "reject", data.comment)
    return msgspec.convert(case, CaseOut)


router = Router(
    path="/v1",
    route_handlers=[
        file_transfer,
        file_markdown,
        get_transfer,
        get_markdown,
        list_approvals,
        get_approval,
        approve_case,
        reject_case,
    ],
    tags=["approvals"],
)
