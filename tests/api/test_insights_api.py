"""Insights from real case, step and exception rows: cycle times by kind and closing role, SLA breaches,
what waits by age; the same on /metrics; and one subject's audit trail in order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from service.db.models import ApprovalCase, ApprovalStep
from service.security.audit import audit
from service.workflow.exceptions import raise_exception
from tests.api.workflow_fixtures import workflow_api
from tests.apiclient import ApiClient

__all__ = ["workflow_api"]

HOUR = 3600.0


def case(
    case_id: str,
    kind: str,
    created: datetime,
    *,
    status: str,
    closed: datetime | None = None,
    due: datetime | None = None,
) -> ApprovalCase:
    return ApprovalCase(
        id=case_id,
        kind=kind,
        subject=f"{kind}:{case_id}",
        requested_by="sam",
        decision_id="d-" + case_id,
        status=status,
        approvers=["regional_manager"],
        approvals_required=1,
        escalation=[],
        escalation_level=0,
        sla_hours=None if due is None else 8,
        sla_due_at=due,
        created_at=created,
        updated_at=closed or created,
        closed_at=closed,
        version=1,
    )


def step(case_id: str, at: datetime, action: str, role: str | None = None) -> ApprovalStep:
    return ApprovalStep(case_id=case_id, at=at, action=action, actor="someone", role=role, detail={})


async def seed_cases(api: ApiClient, now: datetime) -> None:
    """Transfers closed by regional managers in 1, 2, 3 and 10 hours and one by a store manager in 30
    minutes; one markdown rejected; one expired; two pending (one past its SLA)."""
    rows: list[Any] = []
    for n, hours in enumerate((1, 2, 3, 10)):
        created = now - timedelta(days=2, hours=n)
        closed = created + timedelta(hours=hours)
        rows.append(
            case(
                f"t-{n}",
                "transfer",
                created,
                status="executed",
                closed=closed,
                due=created + timedelta(hours=8),
            )
        )
        rows += [step(f"t-{n}", created, "opened"), step(f"t-{n}", closed, "approved", "regional_manager")]
    created = now - timedelta(days=1)
    rows.append(case("t-9", "transfer", created, status="approved", closed=created + timedelta(minutes=30)))
    rows += [
        step("t-9", created + timedelta(minutes=10), "approved", "store_manager"),
        step("t-9", created + timedelta(minutes=30), "approved", "regional_manager"),
    ]
    created = now - timedelta(days=1)
    rows.append(
        case(
            "m-1",
            "markdown",
            created,
            status="rejected",
            closed=created + timedelta(hours=5),
            due=created + timedelta(hours=4),
        )
    )
    rows.append(step("m-1", created + timedelta(hours=5), "rejected", "merchandiser"))
    rows.append(
        case(
            "m-2",
            "markdown",
            created,
            status="expired",
            closed=created + timedelta(hours=9),
            due=created + timedelta(hours=8),
        )
    )
    rows.append(step("m-2", created + timedelta(hours=9), "expired"))
    rows.append(
        case("t-p1", "transfer", now - timedelta(minutes=20), status="pending", due=now + timedelta(hours=8))
    )
    rows.append(
        case("t-p2", "transfer", now - timedelta(hours=30), status="pending", due=now - timedelta(hours=22))
    )
    async with api.session() as session, session.begin():
        session.add_all(rows)


async def test_approval_insights_give_cycle_times_by_kind_and_closing_role_breaches_and_queue_ages(
    workflow_api: ApiClient,
) -> None:
    now = datetime.now(UTC)
    await seed_cases(workflow_api, now)
    body = (await workflow_api.as_("planner").get("/v1/insights/approvals")).json()
    cycle = {(c["kind"], c["role"]): c for c in body["cycle_time"]}
    assert set(cycle) == {("transfer", "regional_manager"), ("markdown", "merchandiser")}
    managers = cycle[("transfer", "regional_manager")]
    # 0.5 h (t-9, closed by its last approval), 1, 2, 3, 10 h
    assert managers["closed"] == 5
    assert managers["p50_seconds"] == 2 * HOUR
    assert managers["p90_seconds"] == 3 * HOUR + 0.6 * 7 * HOUR
    assert cycle[("markdown", "merchandiser")]["p50_seconds"] == 5 * HOUR
    sla = {s["kind"]: s for s in body["sla"]}
    # transfers: t-3 closed after 10 h of 8, t-p2 pending past due; markdowns: m-1 late, m-2 expired
    assert (sla["transfer"]["cases"], sla["transfer"]["breached"], sla["transfer"]["breach_rate"]) == (
        6,
        2,
        0.3333,
    )
    assert (sla["markdown"]["cases"], sla["markdown"]["breached"]) == (2, 2)
    assert body["open_by_age"] == [
        {"kind": "transfer", "age_band": "under_1h", "count": 1},
        {"kind": "transfer", "age_band": "1d_to_3d", "count": 1},
    ]


async def test_exception_insights_count_what_is_unresolved_by_kind_age_and_state(
    workflow_api: ApiClient,
) -> None:
    now = datetime.now(UTC)
    async with workflow_api.session() as session, session.begin():
        await raise_exception(session, "stuck_approval", "c-1", detail={}, now=now - timedelta(hours=2))
        await raise_exception(session, "stuck_approval", "c-2", detail={}, now=now - timedelta(days=4))
        await raise_exception(session, "failed_delivery", "d-1", detail={}, now=now)
    body = (await workflow_api.as_("stock").get("/v1/insights/exceptions")).json()
    assert body["open_by_age"] == [
        {"kind": "failed_delivery", "age_band": "under_1h", "count": 1},
        {"kind": "stuck_approval", "age_band": "1h_to_4h", "count": 1},
        {"kind": "stuck_approval", "age_band": "over_3d", "count": 1},
    ]
    assert body["by_state"] == [
        {"kind": "failed_delivery", "state": "open", "count": 1},
        {"kind": "stuck_approval", "state": "open", "count": 2},
    ]


async def test_metrics_carry_the_insights(workflow_api: ApiClient) -> None:
    now = datetime.now(UTC)
    await seed_cases(workflow_api, now)
    async with workflow_api.session() as session, session.begin():
        await raise_exception(session, "stuck_approval", "t-p2", detail={}, now=now)
    text = (await workflow_api.http.get("/metrics")).text
    assert (
        'retail_policy_approval_cycle_seconds{kind="transfer",quantile="0.5",role="regional_manager"} 7200.0'
        in text
    )
    assert 'retail_policy_approval_sla_breach_ratio{kind="markdown"} 1.0' in text
    assert 'retail_policy_approvals_open{age_band="1d_to_3d",kind="transfer"} 1.0' in text
    assert 'retail_policy_exceptions_open{age_band="under_1h",kind="stuck_approval"} 1.0' in text


async def test_the_audit_trail_of_a_subject_is_whole_and_in_order(workflow_api: ApiClient) -> None:
    async with workflow_api.session() as session, session.begin():
        await audit(session, "sam", "case.opened", "transfer:t-77", {"case": "c-1"})
        await audit(session, "ana", "case.approved", "transfer:t-76", {})
        await audit(session, "ana", "case.approved", "transfer:t-77", {"role": "regional_manager"}, "fine")
        await audit(session, "system", "case.executed", "transfer:t-77", {})
    body = (await workflow_api.as_("planner").get("/v1/audit", params={"subject": "transfer:t-77"})).json()
    assert [(e["actor"], e["action"]) for e in body["entries"]] == [
        ("sam", "case.opened"),
        ("ana", "case.approved"),
        ("system", "case.executed"),
    ]
    assert body["entries"][1]["note"] == "fine" and body["next"] is None
    page = (
        await workflow_api.as_("admin").get("/v1/audit", params={"subject": "transfer:t-77", "limit": 2})
    ).json()
    rest = (
        await workflow_api.as_("admin").get(
            "/v1/audit", params={"subject": "transfer:t-77", "after": page["next"]}
        )
    ).json()
    assert [e["action"] for e in page["entries"] + rest["entries"]] == [
        "case.opened",
        "case.approved",
        "case.executed",
    ]
    assert (
        await workflow_api.as_("stock").get("/v1/audit", params={"subject": "transfer:t-77"})
    ).status_code == 403
    missing = await workflow_api.as_("admin").get("/v1/audit")
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "query.subject"
