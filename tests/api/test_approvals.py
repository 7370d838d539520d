"""Transfer and markdown requests and their approval cases, on the real app (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from service.db.models import OutboxEvent
from service.errors import ServiceError
from tests.api.approvals_fixtures import START, ApprovalsApi, approvals_api, markdown, transfer

MANAGER = ("ana", "store_manager")


@pytest.fixture
async def wf(database_url: str) -> AsyncIterator[ApprovalsApi]:
    async with approvals_api(database_url) as api:
        yield api


async def routed(wf: ApprovalsApi, **overrides: Any) -> dict[str, Any]:
    response = await wf.file("transfer", transfer(**overrides))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["case"]["status"] == "pending"
    return body


# 1. requests open cases


async def test_a_routed_transfer_opens_a_pending_case_with_approvers_sla_and_chain(wf: ApprovalsApi) -> None:
    body = await routed(wf)
    case = body["case"]
    assert body["decision"]["decision"]["outcome"] == "route"
    assert body["decision"]["trace"]["facts"]["transfer"]["value"] == 1200.0
    assert case["approvers"] == ["store_manager"]
    assert (case["approval"], case["approvals_required"]) == ("any", 1)
    assert case["escalation"] == ["district_manager", "regional_manager"]
    assert case["sla_due_at"] == (START + timedelta(hours=24)).isoformat()
    assert [s["action"] for s in case["steps"]] == ["opened"]
    shown = (await wf.get("/v1/transfers/t-1")).json()
    assert shown["case"]["id"] == case["id"] and shown["decision"]["trace"] is not None
    assert await wf.events("transfer:t-1") == ["case.opened"]


async def test_filing_the_same_request_again_answers_it_and_another_body_is_409(wf: ApprovalsApi) -> None:
    first = await routed(wf)
    again = await wf.file("transfer", transfer())
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["case"]["id"] == first["case"]["id"]
    other = await wf.file("transfer", transfer(qty=3))
    assert other.status_code == 409
    assert other.headers["content-type"].startswith("application/problem+json")
    assert other.json()["errors"][0]["field"] == "transfer_id"
    assert (await wf.get("/v1/transfers/t-1")).json()["request"]["qty"] == 2
    assert await wf.counts(first["case"]["id"], "transfer:t-1") == (1, 1, 1)


async def test_an_approved_transfer_moves_the_stock_at_once(wf: ApprovalsApi) -> None:
    response = await wf.file("transfer", transfer(sku="TEE-001", qty=5))  # 40 at cost: approved
    body = response.json()
    assert body["decision"]["decision"]["outcome"] == "approve"
    assert body["status"] == "executed"
    assert [s["action"] for s in body["case"]["steps"]] == ["opened", "approved", "executed"]
    levels = await wf.levels("TEE-001")
    assert levels["dc-manchester"].sellable == 25 and levels["store-leeds"].in_transit == 5
    assert body["shipment_id"] == f"shp-{body['case']['id']}"
    assert await wf.events("transfer:t-1") == [
        "case.opened",
        "case.approved",
        "case.executed",
        "transfer.shipped",
    ]


async def test_a_rejected_request_is_recorded_and_moves_nothing(wf: ApprovalsApi) -> None:
    response = await wf.file("transfer", transfer(sku="TEE-001", qty=31))
    body = response.json()
    assert response.status_code == 201 and body["status"] == "rejected"
    assert body["case"]["outcome_reason"] == "the source does not hold enough available stock"
    assert (await wf.levels("TEE-001"))["dc-manchester"].sellable == 30


async def test_an_invalid_request_is_422_naming_the_field_and_files_nothing(wf: ApprovalsApi) -> None:
    response = await wf.file("transfer", transfer(to_location="dc-manchester"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "to_location"
    assert (await wf.get("/v1/transfers/t-1")).status_code == 404


# 2. approvers act


async def test_a_store_manager_approves_and_the_transfer_is_executed(wf: ApprovalsApi) -> None:
    case = (await routed(wf))["case"]
    response = await wf.act(case["id"], "approve", *MANAGER, comment="ok")
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["status"] == "executed"
    assert [(s["action"], s["actor"], s["role"]) for s in done["steps"][:2]] == [
        ("opened", "sam", None),
        ("approved", "ana", "store_manager"),
    ]
    levels = await wf.levels("TV-003")
    assert levels["dc-manchester"].sellable == 8 and levels["store-leeds"].in_transit == 2


async def test_the_requester_never_approves_even_holding_the_role(wf: ApprovalsApi) -> None:
    await wf.person("sam", "requester", "store_manager")
    case = (await routed(wf))["case"]
    response = await wf.act(case["id"], "approve", "sam", "requester", "store_manager")
    assert response.status_code == 403
    assert response.json()["errors"][0]["field"] == "actor"
    assert (await wf.get(f"/v1/approvals/{case['id']}")).json()["status"] == "pending"


async def test_the_person_named_in_the_request_never_approves_either(wf: ApprovalsApi) -> None:
    case = (await routed(wf, requested_by={"id": "ana", "role": "store_associate"}))["case"]
    response = await wf.act(case["id"], "approve", *MANAGER)
    assert response.status_code == 403


async def test_an_approver_without_a_required_role_is_403(wf: ApprovalsApi) -> None:
    case = (await routed(wf))["case"]
    response = await wf.act(case["id"], "approve", "dan", "district_manager")
    assert response.status_code == 403
    assert response.json()["errors"][0]["field"] == "role"


async def test_rejecting_needs_a_comment_and_is_recorded(wf: ApprovalsApi) -> None:
    case = (await routed(wf))["case"]
    missing = await wf.act(case["id"], "reject", *MANAGER)
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "comment"
    blank = await wf.act(case["id"], "reject", *MANAGER, comment="  ")
    assert blank.status_code == 422
    response = await wf.act(case["id"], "reject", *MANAGER, comment="York has enough")
    assert response.json()["status"] == "rejected"
    assert response.json()["steps"][-1]["comment"] == "York has enough"
    assert (await wf.levels("TV-003"))["dc-manchester"].sellable == 10


async def test_acting_on_a_case_no_longer_pending_is_409(wf: ApprovalsApi) -> None:
    case = (await routed(wf))["case"]
    await wf.act(case["id"], "reject", *MANAGER, comment="no")
    again = await wf.act(case["id"], "approve", "bea", "store_manager")
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "status"


async def test_an_unknown_case_is_404(wf: ApprovalsApi) -> None:
    response = await wf.act("nope", "approve", *MANAGER)
    assert response.status_code == 404


async def test_all_of_needs_one_person_per_role_and_one_person_counts_once(wf: ApprovalsApi) -> None:
    # ten TVs from Manchester: above 5,000 -> regional manager and operations director, all of them
    case = (await routed(wf, qty=10))["case"]
    assert case["approvers"] == ["regional_manager", "operations_director"]
    assert (case["approval"], case["approvals_required"]) == ("all", 2)
    both = ("rex", "regional_manager", "operations_director")
    first = await wf.act(case["id"], "approve", *both)
    assert first.json()["status"] == "pending"
    twice = await wf.act(case["id"], "approve", *both)
    assert twice.status_code == 409 and twice.json()["errors"][0]["field"] == "actor"
    last = await wf.act(case["id"], "approve", "ola", "operations_director")
    assert last.json()["status"] == "executed"
    assert [(a["person"], a["role"]) for a in last.json()["approvals"]] == [
        ("rex", "regional_manager"),
        ("ola", "operations_director"),
    ]


async def test_two_approvers_racing_on_the_last_approval_make_one_transition(wf: ApprovalsApi) -> None:
    case = (await routed(wf))["case"]
    await wf.person("bea", "store_manager")
    raced: list[Any] = []

    async def second_approver(point: str, case_id: str) -> None:
        if point == "before_write" and not raced:
            raced.append(None)  # bea approves between ana's read and ana's write
            try:
                raced.append(
                    await wf.workflow.act(
                        case_id, "bea", lambda role: role == "store_manager", "approve", None
                    )
                )
            except ServiceError as error:  # pragma: no cover - the assertion below names it
                raced.append(error)

    wf.workflow.hook = second_approver
    response = await wf.act(case["id"], "approve", *MANAGER)
    wf.workflow.hook = None
    assert raced[1]["status"] == "executed"
    assert response.status_code == 409 and response.json()["errors"][0]["field"] == "status"
    steps = (await wf.get(f"/v1/approvals/{case['id']}")).json()["steps"]
    assert [(s["action"], s["actor"]) for s in steps] == [
        ("opened", "sam"),
        ("approved", "bea"),
        ("executed", "workflow"),
    ]
    assert (await wf.levels("TV-003"))["dc-manchester"].sellable == 8


async def test_the_inbox_lists_cases_by_role_oldest_first_in_pages(wf: ApprovalsApi) -> None:
    ids = []
    for n in range(5):
        ids.append((await routed(wf, transfer_id=f"t-{n}"))["case"]["id"])
        wf.clock.advance(minutes=1)
    await wf.file("markdown", markdown())
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"role": "store_manager", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await wf.get("/v1/approvals", **params)).json()
        seen += [c["id"] for c in page["cases"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    kinds = (await wf.get("/v1/approvals", kind="markdown")).json()["cases"]
    assert [c["subject"] for c in kinds] == ["markdown:m-1"]
    assert (await wf.get("/v1/approvals", role="district_manager")).json()["cases"] == []
    wf.clock.now = START + timedelta(hours=24, seconds=30)  # the first transfer's SLA has passed
    late = (await wf.get("/v1/approvals", overdue="true")).json()["cases"]
    assert [c["id"] for c in late] == [ids[0]] and late[0]["overdue"] is True
    assert ids[0] not in [c["id"] for c in (await wf.get("/v1/approvals", overdue="false")).json()["cases"]]
    bad = await wf.get("/v1/approvals", status="waiting")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "status"
    assert (await wf.get("/v1/approvals", cursor="%%%")).json()["errors"][0]["field"] == "cursor"


# 3. SLAs escalate


async def test_a_case_past_its_sla_escalates_up_the_chain_then_expires(wf: ApprovalsApi) -> None:
    case = (await routed(wf))["case"]
    assert (await wf.sweep(START + timedelta(hours=23)))["escalated"] == 0
    first = START + timedelta(hours=24)
    assert (await wf.sweep(first))["escalated"] == 1
    now = (await wf.get(f"/v1/approvals/{case['id']}")).json()
    assert now["approvers"] == ["district_manager"] and now["escalation_level"] == 1
    assert now["sla_due_at"] == (first + timedelta(hours=24)).isoformat()
    assert now["steps"][-1]["detail"] == {"from": ["store_manager"], "to": ["district_manager"], "level": 1}
    assert (await wf.act(case["id"], "approve", *MANAGER)).status_code == 403  # the store manager no longer
    await wf.sweep(first + timedelta(hours=24))
    await wf.sweep(first + timedelta(hours=48))
    gone = (await wf.get(f"/v1/approvals/{case['id']}")).json()
    assert gone["status"] == "expired" and gone["closed_at"] is not None
    assert [s["action"] for s in gone["steps"]] == ["opened", "escalated", "escalated", "expired"]
    assert await wf.events("transfer:t-1") == [
        "case.opened",
        "case.escalated",
        "case.escalated",
        "case.expired",
    ]


async def test_acting_on_a_stuck_case_resolves_its_stuck_approval_exception_at_once(wf: ApprovalsApi) -> None:
    case = (await routed(wf))["case"]
    portal = wf.client.http.blocking_portal
    monitor = wf.client.services.monitor
    await asyncio.to_thread(portal.call, monitor.check_stuck_approvals, START + timedelta(hours=25))
    stock = wf.client.as_("stock")
    [stuck] = (await stock.get("/v1/exceptions", params={"kind": "stuck_approval"})).json()["exceptions"]
    assert (stuck["key"], stuck["state"]) == (case["id"], "open")
    wf.clock.now = START + timedelta(hours=25)  # past its SLA here too (a case not yet due has none to clear)
    assert (await wf.act(case["id"], "approve", *MANAGER)).status_code == 200
    [after] = (await stock.get("/v1/exceptions", params={"kind": "stuck_approval"})).json()["exceptions"]
    assert (after["id"], after["state"]) == (stuck["id"], "resolved")  # not left for the next check
    # announced in the approval's transaction, as every resolution is
    async with wf.client.session() as session:
        [payload] = (
            await session.execute(
                select(OutboxEvent.payload).where(
                    OutboxEvent.subject == f"exception:{stuck['id']}",
                    OutboxEvent.kind == "exception.resolved",
                )
            )
        ).scalars()
    resolved = payload["exception"]
    assert resolved.pop("resolved_at") is not None
    assert resolved == {
        "id": stuck["id"],
        "kind": "stuck_approval",
        "key": case["id"],
        "state": "resolved",
        "resolved_by": "system",
        "location": None,
        "sku": None,
    }


async def test_sweepers_racing_escalate_a_case_once(wf: ApprovalsApi) -> None:
    case = (await routed(wf))["case"]
    when = START + timedelta(hours=25)
    rounds = await asyncio.gather(*(wf.sweep(when) for _ in range(4)))
    assert sum(r["escalated"] for r in rounds) == 1
    steps = (await wf.get(f"/v1/approvals/{case['id']}")).json()["steps"]
    assert [s["action"] for s in steps] == ["opened", "escalated"]


# 4. approved means done


async def test_an_approved_transfer_that_would_now_breach_the_floor_is_blocked(wf: ApprovalsApi) -> None:
    case = (await routed(wf, qty=8))["case"]
    sold = [{"event_id": "pos-1", "type": "sale", "sku": "TV-003", "location": "dc-manchester", "qty": 5}]
    assert (await wf.client.as_("stock").post("/v1/stock/events", json=sold)).status_code == 200
    done = (await wf.act(case["id"], "approve", *MANAGER)).json()
    assert done["status"] == "blocked"
    assert "below its floor" in done["outcome_reason"]
    assert (await wf.levels("TV-003"))["dc-manchester"].sellable == 5
    assert (await wf.events("transfer:t-1"))[-1] == "case.blocked"


async def test_the_receipt_at_the_destination_closes_the_transfer(wf: ApprovalsApi) -> None:
    case = (await routed(wf))["case"]
    shipped = (await wf.act(case["id"], "approve", *MANAGER)).json()
    shipment = (await wf.get("/v1/transfers/t-1")).json()["shipment_id"]
    assert shipped["status"] == "executed" and shipment
    receipt = [
        {
            "event_id": "rcv-1",
            "type": "transfer_in",
            "sku": "TV-003",
            "location": "store-leeds",
            "qty": 2,
            "reference": shipment,
        }
    ]
    assert (await wf.client.as_("stock").post("/v1/stock/events", json=receipt)).status_code == 200
    closed = (await wf.get("/v1/transfers/t-1")).json()
    assert closed["status"] == "received"
    assert closed["case"]["steps"][-1]["detail"]["event_id"] == "rcv-1"
    levels = await wf.levels("TV-003")
    assert levels["store-leeds"].sellable == 4 and levels["store-leeds"].in_transit == 0


async def test_an_approved_markdown_sets_the_price_the_decisions_read(wf: ApprovalsApi) -> None:
    case = (await wf.file("markdown", markdown(effective_from=START.date().isoformat()))).json()["case"]
    wf.clock.now = START  # the price is in effect from the approval on (the day began earlier)
    done = (await wf.act(case["id"], "approve", "cat", "category_manager")).json()
    assert done["status"] == "executed"
    assert done["steps"][-1]["detail"]["price"] == 12.0
    items = {i["sku"]: i for i in (await wf.get("/v1/items")).json()}
    assert items["TEE-001"]["price"] == 12.0
    order = {
        "order_id": "o-1",
        "channel": "web",
        "fulfillment": "ship",
        "lines": [{"sku": "TEE-001", "qty": 2}],
        "destination": {"lat": 53.8, "lon": -1.55, "region": "north"},
    }
    decided = (await wf.dapi.post("allocation", order, trace="full")).json()
    assert decided["trace"]["facts"]["order"]["value"] == 24.0
    assert (await wf.events("markdown:m-1"))[-2:] == ["case.executed", "markdown.price_changed"]


async def test_a_markdown_effective_later_leaves_todays_price(wf: ApprovalsApi) -> None:
    case = (await wf.file("markdown", markdown(effective_from="2027-01-10"))).json()["case"]
    done = (await wf.act(case["id"], "approve", "cat", "category_manager")).json()
    assert done["steps"][-1]["detail"]["effective_at"] == "2027-01-10T00:00:00+00:00"
    items = {i["sku"]: i for i in (await wf.get("/v1/items")).json()}
    assert items["TEE-001"]["price"] == 20.0


# 9. recoverable execution


class Crash(Exception):
    """A worker stopping at an exact point."""


def crash_at(wanted: str) -> Any:
    async def hook(point: str, _case_id: str) -> None:
        if point == wanted:
            raise Crash(point)

    return hook


@pytest.mark.parametrize("point", ["before_move", "after_move"])
async def test_a_worker_stopping_around_the_stock_move_is_finished_by_recovery(
    wf: ApprovalsApi, point: str
) -> None:
    case = (await routed(wf))["case"]
    wf.workflow.hook = crash_at(point)
    stopped = (await wf.act(case["id"], "approve", *MANAGER)).json()
    wf.workflow.hook = None
    assert stopped["status"] == "executed"  # approved and executed in one transaction, before the move
    moved = point == "after_move"
    assert (await wf.levels("TV-003"))["dc-manchester"].sellable == (8 if moved else 10)
    restarted = wf.restarted()  # a worker started after the stop knows nothing of what it moved
    try:
        assert (await wf.sweep(START + timedelta(seconds=10), restarted))["moved"] == 0  # in its grace
        assert (await wf.sweep(START + timedelta(minutes=5), restarted))["moved"] == (0 if moved else 1)
        assert (await wf.get(f"/v1/approvals/{case['id']}")).json()["status"] == "executed"
        assert (await wf.sweep(START + timedelta(minutes=10), restarted))["moved"] == 0
        assert (await wf.sweep(START + timedelta(minutes=10)))["moved"] == 0  # the app's worker, too
    finally:
        restarted.close()
    levels = await wf.levels("TV-003")
    assert levels["dc-manchester"].sellable == 8 and levels["store-leeds"].in_transit == 2


async def test_a_move_that_failed_is_applied_by_the_same_workers_recovery(wf: ApprovalsApi) -> None:
    case = (await routed(wf))["case"]
    wf.workflow.hook = crash_at("before_move")
    assert (await wf.act(case["id"], "approve", *MANAGER)).json()["status"] == "executed"
    wf.workflow.hook = None
    assert (await wf.sweep(START + timedelta(minutes=5)))["moved"] == 1
    assert (await wf.levels("TV-003"))["dc-manchester"].sellable == 8


async def test_a_receipt_before_recovery_moves_the_stock_a_stopped_worker_left_unmoved(
    wf: ApprovalsApi,
) -> None:
    case = (await routed(wf))["case"]
    wf.workflow.hook = crash_at("before_move")
    assert (await wf.act(case["id"], "approve", *MANAGER)).json()["status"] == "executed"
    wf.workflow.hook = None
    assert (await wf.levels("TV-003"))["dc-manchester"].sellable == 10  # executed, not moved
    shipment = (await wf.get("/v1/transfers/t-1")).json()["shipment_id"]
    receipt = {
        "event_id": "rcv-leeds",
        "type": "transfer_in",
        "sku": "TV-003",
        "location": "store-leeds",
        "qty": 2,
        "reference": shipment,
    }
    for _ in range(2):  # the receipt sent again: neither moves the stock twice
        assert (await wf.client.as_("stock").post("/v1/stock/events", json=[receipt])).status_code == 200
        assert (await wf.get("/v1/transfers/t-1")).json()["status"] == "received"
        levels = await wf.levels("TV-003")
        assert (levels["dc-manchester"].sellable, levels["store-leeds"].in_transit) == (8, 0)
        assert levels["store-leeds"].sellable == 4
    assert (await wf.sweep(START + timedelta(minutes=5)))["moved"] == 0


async def test_every_transition_writes_one_step_one_audit_row_and_one_event(wf: ApprovalsApi) -> None:
    case = (await routed(wf))["case"]
    await wf.act(case["id"], "approve", *MANAGER)
    steps, audits, events = await wf.counts(case["id"], "transfer:t-1")
    assert (steps, audits) == (3, 3)  # opened, approved, executed
    assert events == 4  # ... and transfer.shipped beside case.executed


async def test_a_receipt_elsewhere_than_the_destination_leaves_the_transfer_open(wf: ApprovalsApi) -> None:
    case = (await routed(wf))["case"]
    await wf.act(case["id"], "approve", *MANAGER)
    shipment = (await wf.get("/v1/transfers/t-1")).json()["shipment_id"]
    receipt = [
        {
            "event_id": "rcv-york",
            "type": "transfer_in",
            "sku": "TV-003",
            "location": "store-york",
            "qty": 2,
            "reference": shipment,
        }
    ]
    assert (await wf.client.as_("stock").post("/v1/stock/events", json=receipt)).status_code == 200
    assert (await wf.get("/v1/transfers/t-1")).json()["status"] == "executed"


async def test_an_all_of_case_escalates_to_the_next_role_alone(wf: ApprovalsApi) -> None:
    # 26 TVs priced 2,000 is more than 50,000 exposed: category manager and merchandising director, all of them
    body = markdown(sku="TV-003", current_price=2000.0, proposed_price=1800.0)
    case = (await wf.file("markdown", body)).json()["case"]
    assert (case["approvers"], case["approval"], case["approvals_required"]) == (
        ["category_manager", "merchandising_director"],
        "all",
        2,
    )
    assert (await wf.act(case["id"], "approve", "cat", "category_manager")).json()["status"] == "pending"
    await wf.sweep(START + timedelta(hours=24))
    up = (await wf.get(f"/v1/approvals/{case['id']}")).json()
    assert (up["approvers"], up["approvals_required"], up["approvals"]) == (["commercial_director"], 1, [])
    done = await wf.act(case["id"], "approve", "cole", "commercial_director")
    assert done.json()["status"] == "executed"


async def test_one_request_filed_twice_at_once_opens_one_case(wf: ApprovalsApi) -> None:
    await wf.person("sam", "requester")
    first, second = await asyncio.gather(wf.file("transfer", transfer()), wf.file("transfer", transfer()))
    assert sorted([first.status_code, second.status_code]) == [200, 201]
    assert first.json()["case"]["id"] == second.json()["case"]["id"]
    assert len((await wf.get("/v1/approvals")).json()["cases"]) == 1
