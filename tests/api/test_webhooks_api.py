"""Subscriptions and deliveries over HTTP: admin only, secrets never shown, bad input named and harmless."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import select

from service.db.models import Delivery, ExceptionRecord, Subscription
from service.settings import WorkflowSettings
from service.workflow.exceptions import raise_exception
from service.workflow.subscriptions import verify
from tests.api.workflow_fixtures import workflow_api
from tests.apiclient import ApiClient, api_client, make_settings
from tests.workflow.receiver import receiver

__all__ = ["workflow_api"]

WAREHOUSE = {
    "id": "warehouse",
    "url": "https://wms.example.com/hooks/retail",
    "events": ["transfer.shipped", "case.*"],
    "secret": "whsec-0123456789abcdef",
}
SECRET = "ops-secret-0123456789"
STORES = {"id": "stores", "url": "http://stores.internal:8080/events", "events": ["*"], "secret": "x" * 16}


async def test_subscriptions_are_replaced_as_a_set_and_never_show_their_secret(
    workflow_api: ApiClient,
) -> None:
    admin = workflow_api.as_("admin")
    assert (await admin.put("/v1/subscriptions", json=[WAREHOUSE, STORES])).status_code == 200
    keep_secret = {k: v for k, v in WAREHOUSE.items() if k != "secret"} | {"events": ["case.approved"]}
    response = await admin.put("/v1/subscriptions", json=[keep_secret])
    assert response.status_code == 200
    listed = (await admin.get("/v1/subscriptions")).json()["subscriptions"]
    assert [(s["id"], s["events"]) for s in listed] == [("warehouse", ["case.approved"])]
    assert "secret" not in response.text and "whsec" not in (await admin.get("/v1/subscriptions")).text
    async with workflow_api.session() as session:
        [row] = (await session.execute(select(Subscription))).scalars().all()
    assert row.secret == WAREHOUSE["secret"]  # kept: the update left it out


async def test_a_bad_subscription_is_422_naming_the_field_and_changes_nothing(
    workflow_api: ApiClient,
) -> None:
    admin = workflow_api.as_("admin")
    await admin.put("/v1/subscriptions", json=[WAREHOUSE])
    cases = [
        ([WAREHOUSE, {**STORES, "url": "ftp://stores.internal/events"}], "[1].url"),
        ([{**WAREHOUSE, "events": ["case.*", "Case Opened"]}], "[0].events[1]"),
        ([{k: v for k, v in STORES.items() if k != "secret"}], "[0].secret"),
        ([WAREHOUSE, {**STORES, "id": "warehouse"}], "[1].id"),
        ([{**STORES, "secret": "short"}], "[0].secret"),
        ([{**STORES, "url": "http://user:pw@stores.internal/"}], "[0].url"),
    ]
    for body, field in cases:
        response = await admin.put("/v1/subscriptions", json=body)
        assert response.status_code == 422, body
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["errors"][0]["field"] == field
    listed = (await admin.get("/v1/subscriptions")).json()["subscriptions"]
    assert [(s["id"], s["url"]) for s in listed] == [("warehouse", WAREHOUSE["url"])]


async def test_only_an_admin_sees_or_changes_subscriptions_and_deliveries(workflow_api: ApiClient) -> None:
    for role in ("stock", "planner", "decide"):
        client = workflow_api.as_(role)
        assert (await client.get("/v1/subscriptions")).status_code == 403
        assert (await client.put("/v1/subscriptions", json=[WAREHOUSE])).status_code == 403
        assert (await client.get("/v1/deliveries")).status_code == 403
        assert (await client.post("/v1/deliveries/d-1/retry")).status_code == 403


def delivery(delivery_id: str, status: str, error: str | None = None) -> Delivery:
    now = datetime.now(UTC)
    return Delivery(
        id=delivery_id,
        event_id="e-" + delivery_id,
        subscription_id="warehouse",
        kind="case.approved",
        status=status,
        attempts=8 if status == "dead" else 1,
        next_attempt_at=now,
        last_error=error,
        created_at=now,
    )


async def test_a_dead_delivery_is_listed_and_retried_once_and_its_exception_resolves(
    workflow_api: ApiClient,
) -> None:
    admin = workflow_api.as_("admin")
    await admin.put("/v1/subscriptions", json=[WAREHOUSE])
    async with workflow_api.session() as session, session.begin():
        session.add_all(
            [
                delivery("d-1", "dead", "HTTP 500"),
                delivery("d-2", "delivered"),
                delivery("d-3", "dead", "timeout"),
            ]
        )
        await raise_exception(
            session, "failed_delivery", "d-1", detail={"delivery_id": "d-1"}, now=datetime.now(UTC)
        )
    dead = (await admin.get("/v1/deliveries", params={"status": "dead"})).json()
    assert [(d["id"], d["last_error"]) for d in dead["deliveries"]] == [
        ("d-3", "timeout"),
        ("d-1", "HTTP 500"),
    ]
    page = (await admin.get("/v1/deliveries", params={"limit": 2})).json()
    assert [d["id"] for d in page["deliveries"]] == ["d-3", "d-2"] and page["next"] == "d-2"
    rest = (await admin.get("/v1/deliveries", params={"limit": 2, "before": page["next"]})).json()
    assert [d["id"] for d in rest["deliveries"]] == ["d-1"] and rest["next"] is None

    retried = await admin.post("/v1/deliveries/d-1/retry")
    assert retried.status_code == 200
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)
    again = await admin.post("/v1/deliveries/d-1/retry")
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "status"
    assert (await admin.post("/v1/deliveries/d-2/retry")).status_code == 409
    assert (await admin.post("/v1/deliveries/nope/retry")).status_code == 404
    async with workflow_api.session() as session:
        [record] = (await session.execute(select(ExceptionRecord))).scalars().all()
    assert (record.kind, record.state) == ("failed_delivery", "resolved")


async def test_a_bad_status_filter_is_422_naming_the_query_field(workflow_api: ApiClient) -> None:
    response = await workflow_api.as_("admin").get("/v1/deliveries", params={"status": "lost"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.status"


async def test_the_running_service_delivers_an_exception_event_to_a_real_receiver(sqlite_url: str) -> None:
    """The dispatcher started with the app: a negative sale opens an exception, whose event reaches the
    subscriber signed with its secret."""
    workflow = WorkflowSettings(webhook_poll_seconds=0.05, exception_check_seconds=3600)
    settings = replace(make_settings(sqlite_url), workflow=workflow)
    async with receiver(lambda request: 204) as hooks, api_client(settings) as api:
        subscription = {"id": "ops", "url": hooks.url, "events": ["exception.*"], "secret": SECRET}
        assert (await api.as_("admin").put("/v1/subscriptions", json=[subscription])).status_code == 200
        stock = api.as_("stock")
        await stock.put("/v1/stock", json=[{"sku": "TEE", "location": "S1", "sellable": 1}])
        sale = {"event_id": "pos-1", "type": "sale", "sku": "TEE", "location": "S1", "qty": 2}
        await stock.post("/v1/stock/events", json=[sale])
        await asyncio.wait_for(hooks.wait_for(1), 30)
        [request] = hooks.requests
        assert request.event["kind"] == "exception.opened"
        assert request.event["payload"]["exception"]["key"] == "TEE@S1"
        headers = request.headers
        assert verify(
            SECRET,
            headers["x-retail-policy-timestamp"],
            headers["x-retail-policy-event-id"],
            request.body,
            headers["x-retail-policy-signature"],
        )
