"""Filing a transfer or markdown request: decide it with the same decision as `/v1/decisions/*`, open its
case, and execute it at once when the ruleset approves it.

A request is identified by its kind and its id (`transfer_id`, `markdown_id`): filing the same id with the
same body again answers the same request (replayed), with another body 409 and nothing changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.base import aware
from service.db.models import ChangeRequest
from service.decisions.approvals import decide_markdown, decide_transfer
from service.decisions.context import DecisionContext, TraceLevel, context_from
from service.decisions.ids import new_decision_id
from service.decisions.record import DecisionRecord
from service.decisions.schemas import MarkdownRequest, TransferRequest
from service.domain.cases import chain_above
from service.domain.markdown import MARKDOWN_CHAIN
from service.domain.transfer import TRANSFER_CHAIN
from service.errors import Conflict, FieldError, NotFound
from service.workflow.cases import Workflow
from service.workflow.rounds import has_shipped, shipment_of

Decide = Callable[[DecisionContext, Any, TraceLevel], Awaitable[DecisionRecord]]
KINDS: dict[str, tuple[Decide, tuple[str, ...], str]] = {
    "transfer": (decide_transfer, TRANSFER_CHAIN, "transfer_id"),
    "markdown": (decide_markdown, MARKDOWN_CHAIN, "markdown_id"),
}


def fingerprint(body: TransferRequest | MarkdownRequest) -> str:
    """What 'the same body' means: every field, in declaration order."""
    return hashlib.sha256(msgspec.json.encode(body)).hexdigest()


async def request_view(workflow: Workflow, session: AsyncSession, request: ChangeRequest) -> dict[str, Any]:
    case = await workflow.view(session, request.case_id)
    return {
        "request_id": request.request_id,
        "kind": request.kind,
        "status": case["status"],
        "requested_by": request.requested_by,
        "created_at": aware(request.created_at).isoformat(),
        "request": request.body,
        "decision": request.decision,
        "shipment_id": request.shipment_id
        or (shipment_of(case["id"]) if has_shipped(request.kind, case["status"]) else None),
        "case": case,
    }


async def get_request(workflow: Workflow, kind: str, request_id: str) -> dict[str, Any]:
    async with workflow.sessions() as session:
        found = await session.get(ChangeRequest, f"{kind}:{request_id}")
        if found is None:
            raise NotFound(f"no {kind} request {request_id!r}", [FieldError("id", f"unknown {kind} request")])
        return await request_view(workflow, session, found)


async def _existing(workflow: Workflow, subject: str, print_: str, id_field: str) -> dict[str, Any] | None:
    async with workflow.sessions() as session:
        found = await session.get(ChangeRequest, subject)
        if found is None:
            return None
        if found.fingerprint != print_:
            raise Conflict(
                f"{id_field} {found.request_id!r} was already filed with another body; nothing was changed",
                [FieldError(id_field, "already used with another request body")],
            )
        return await request_view(workflow, session, found)


async def file_request(
    workflow: Workflow,
    kind: str,
    body: TransferRequest | MarkdownRequest,
    filed_by: str,
    trace: TraceLevel = "rules",
) -> tuple[dict[str, Any], bool]:
    """File `body`; answers the request as it now is and whether it was a replay of an earlier filing."""
    decide, chain, id_field = KINDS[kind]
    request_id = str(getattr(body, id_field))
    subject = f"{kind}:{request_id}"
    print_ = fingerprint(body)
    replay = await _existing(workflow, subject, print_, id_field)
    if replay is not None:
        return replay, True
    services = workflow.services
    now: datetime = workflow.clock()
    ctx = context_from(services, filed_by, now, await services.master_data.get(now))
    record = await decide(ctx, body, trace)
    decision = record.decision
    escalation = chain_above(
        decision.get("approvers", []), decision.get("escalation", []), chain, body.requested_by.role
    )
    case_id = new_decision_id()
    try:
        async with workflow.writing() as session:
            session.add(
                ChangeRequest(
                    id=subject,
                    kind=kind,
                    request_id=request_id,
                    fingerprint=print_,
                    body=msgspec.to_builtins(body),
                    requested_by=filed_by,
                    decision=record.response(),
                    outcome=decision["outcome"],
                    case_id=case_id,
                    approval=decision.get("approval", "any"),
                    created_at=now,
                )
            )
            await session.flush()  # a request filed twice at once stops here, before its case
            case = await workflow.open(
                session,
                case_id=case_id,
                kind=kind,
                subject=subject,
                requested_by=filed_by,
                decision_id=record.id,
                decision=decision,
                escalation=escalation,
                now=now,
            )
    except IntegrityError:
        replay = await _existing(workflow, subject, print_, id_field)
        if replay is None:
            raise
        return replay, True
    if case["status"] == "approved":
        await workflow.execute_safely(case_id, now)
    async with workflow.sessions() as session:
        found = await session.get(ChangeRequest, subject)
        assert found is not None
        return await request_view(workflow, session, found), False
