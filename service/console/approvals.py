"""Approval pages: the approver's inbox (their roles, overdue first, time left on the SLA) and a case page
with its steps, its request's decision and the approve and reject forms.

Reads call `service.workflow.inbox` and `Workflow.view` as `GET /v1/approvals[/{id}]` do; approve and
reject call `Workflow.act` as `POST /v1/approvals/{id}/approve|reject` do, as the signed-in person, so
the four-eyes rule, one-person-once and the role checks are the API's own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.params import FromPath, Parameter

from service.api import approvals as api
from service.api import decisions as api_decisions
from service.console.web import done, may, principal, problem_context, render, same_roles
from service.domain.cases import APPROVER_ROLES
from service.errors import ServiceError
from service.workflow.inbox import inbox
from service.workflow.requests import get_request

PER_PAGE = 25
CaseId = Annotated[str, Parameter(max_length=64)]


def _time_left(due: Any, now: datetime) -> str:
    """'3 h 20 min left' or 'overdue by 2 h 5 min', for the SLA countdown."""
    if not due:
        return "no SLA"
    moment = due if isinstance(due, datetime) else datetime.fromisoformat(str(due))
    seconds = int((moment - now).total_seconds())
    minutes = abs(seconds) // 60
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    span = (f"{days} d " if days else "") + (f"{hours} h " if hours or days else "") + f"{mins} min"
    return f"{span} left" if seconds >= 0 else f"overdue by {span}"


@get("/approvals", opt=same_roles(api.list_approvals))
async def inbox_page(request: Request[Any, Any, Any]) -> Response[Any]:
    me = principal(request)
    mine = [role for role in APPROVER_ROLES if role in me.roles]
    query = request.query_params
    role = query.get("role")
    if role not in APPROVER_ROLES:
        role = mine[0] if len(mine) == 1 else None
    status = query.get("status") or "pending"
    cursor = query.get("cursor") or None
    workflow = api.workflow_of(request)
    problem = None
    overdue: list[dict[str, Any]] = []
    within: dict[str, Any] = {"cases": [], "next_cursor": None}
    try:
        if cursor is None:  # the overdue ones head the first page
            overdue = (
                await inbox(
                    workflow, role=role, status=status, overdue=True, kind=None, limit=PER_PAGE, cursor=None
                )
            )["cases"]
        within = await inbox(
            workflow,
            role=role,
            status=status,
            overdue=False if status == "pending" else None,
            kind=None,
            limit=PER_PAGE,
            cursor=cursor,
        )
    except ServiceError as error:
        problem = problem_context(error)
    now = datetime.now(UTC)
    for case in [*overdue, *within["cases"]]:
        case["time_left"] = _time_left(case.get("sla_due_at"), now) if case["status"] == "pending" else ""
    return render(
        request,
        "approvals.html",
        title="Approvals",
        roles=APPROVER_ROLES,
        mine=mine,
        role=role,
        status=status,
        overdue=overdue,
        cases=within["cases"],
        next_cursor=within.get("next_cursor"),
        first=cursor is not None,
        problem=problem,
        status_code=problem["status"] if problem else 200,
    )


async def _case_page(
    request: Request[Any, Any, Any], case_id: str, refusal: dict[str, Any] | None = None, status: int = 200
) -> Response[Any]:
    workflow = api.workflow_of(request)
    async with workflow.sessions() as session:
        case = await workflow.view(session, case_id)
    me = principal(request)
    acted = {approval["person"] for approval in case.get("approvals", [])}
    kind, _, request_id = str(case["subject"]).partition(":")
    filed: dict[str, Any] | None = None
    if kind in ("transfer", "markdown") and request_id:
        try:  # the request and its decision, as GET /v1/transfers|markdowns/{id} show them
            filed = await get_request(workflow, kind, request_id)
        except ServiceError:
            filed = None
    return render(
        request,
        "approval.html",
        status_code=status,
        title=f"Case {case['subject']}",
        case=case,
        filed=filed,
        rules=((filed or {}).get("decision") or {}).get("trace", {}).get("rules"),
        may_read_decisions=may(me, api_decisions.get_decision),
        refusal=refusal,
        time_left=_time_left(case.get("sla_due_at"), datetime.now(UTC))
        if case["status"] == "pending"
        else "",
        may_act=any(me.has(role) for role in api.approve_case.opt["roles"]),
        acted=me.name in acted,
    )


@get("/approvals/{case_id:str}", opt=same_roles(api.get_approval))
async def case_page(request: Request[Any, Any, Any], case_id: CaseId) -> Response[Any]:
    return await _case_page(request, case_id)


async def _act(request: Request[Any, Any, Any], case_id: str, verdict: str) -> Response[Any]:
    form = await request.form()
    comment = form.get("comment")
    text = comment.strip()[:2000] if isinstance(comment, str) and comment.strip() else None
    me = principal(request)
    try:
        await api.workflow_of(request).act(case_id, me.name, me.has, verdict, text)
    except ServiceError as error:
        return await _case_page(request, case_id, problem_context(error), error.status)
    return done(f"/console/approvals/{case_id}", "approved" if verdict == "approve" else "rejected")


@post("/approvals/{case_id:str}/approve", opt=same_roles(api.approve_case))
async def approve(request: Request[Any, Any, Any], case_id: FromPath[str]) -> Response[Any]:
    return await _act(request, case_id, "approve")


@post("/approvals/{case_id:str}/reject", opt=same_roles(api.reject_case))
async def reject(request: Request[Any, Any, Any], case_id: FromPath[str]) -> Response[Any]:
    return await _act(request, case_id, "reject")
