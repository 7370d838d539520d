"""The approver's inbox and case page, with the in-process client and keys that name people."""

from __future__ import annotations

import re
from typing import Any

from service.db.engine import create_engine, session_factory
from service.security.keys import create_key
from service.stock import SnapshotRow
from tests.console.conftest import Console

TRANSFER = {
    "transfer_id": "t-1",
    "sku": "TV-003",
    "qty": 2,
    "from_location": "dc-manchester",
    "to_location": "store-leeds",
    "requested_by": {"id": "sam", "role": "store_associate"},
    "reason": "restock",
}


async def _people(console: Console, **people: list[str]) -> None:
    engine = create_engine(console.api.client.settings.database)
    try:
        for name, roles in people.items():
            console.api.client.keys[name] = await create_key(session_factory(engine), name, roles)
    finally:
        await engine.dispose()


async def _routed(console: Console) -> dict[str, Any]:
    await console.api.snapshot([SnapshotRow("TV-003", "dc-manchester", 10)])
    await _people(console, sam=["requester"], ana=["store_manager"], bo=["store_manager", "stock"])
    filed = await console.api.client.http.post(
        "/v1/transfers", json=TRANSFER, headers={"Authorization": f"Bearer {console.api.client.keys['sam']}"}
    )
    assert filed.status_code == 201, filed.text
    body: dict[str, Any] = filed.json()
    assert body["case"]["status"] == "pending"
    return body


async def test_the_inbox_lists_the_case_for_its_role_and_the_approver_approves_it(console: Console) -> None:
    case = (await _routed(console))["case"]
    await console.sign_in("ana")
    inbox = await console.get("/console/approvals")
    assert inbox.status_code == 200
    assert f'data-case="{case["id"]}"' in inbox.text and "left" in inbox.text  # the SLA countdown
    page = await console.get(f"/console/approvals/{case['id']}")
    assert page.status_code == 200 and "Decided <strong>route</strong>" in page.text
    assert 'data-testid="rules-trace"' in page.text  # why it was routed, readable by the approver
    approved = await console.post(f"/console/approvals/{case['id']}/approve", {"comment": "fine"})
    assert approved.status_code == 200 and "Approved." in approved.text
    status = re.search(r'data-testid="case-status">(\w+)<', approved.text)
    assert status is not None and status.group(1) in ("approved", "executed")
    levels = await console.api.levels(["TV-003"])
    assert levels["TV-003"]["store-leeds"].in_transit == 2


async def test_a_rejection_needs_a_comment_as_in_the_api(console: Console) -> None:
    case = (await _routed(console))["case"]
    await console.sign_in("ana")
    refused = await console.post(f"/console/approvals/{case['id']}/reject", {"comment": ""})
    assert refused.status_code == 422 and "a rejection needs a comment" in refused.text
    rejected = await console.post(f"/console/approvals/{case['id']}/reject", {"comment": "not now"})
    assert rejected.status_code == 200 and 'data-testid="case-status">rejected<' in rejected.text


async def test_the_requester_cannot_approve_and_other_roles_do_not_see_the_inbox(console: Console) -> None:
    case = (await _routed(console))["case"]
    await console.sign_in("sam")
    refused = await console.post(f"/console/approvals/{case['id']}/approve")
    assert refused.status_code == 403
    await console.sign_in("author")
    assert (await console.get("/console/approvals")).status_code == 403
