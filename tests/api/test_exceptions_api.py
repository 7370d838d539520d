"""Exceptions over HTTP: raised by stock events as they happen, listed by kind, state, location and age
a page at a time, acknowledged and resolved by people; bad input named and harmless."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from service.db.models import ExpectedReceipt
from service.workflow.exceptions import raise_exception
from tests.api.workflow_fixtures import workflow_api
from tests.apiclient import ApiClient

__all__ = ["workflow_api"]

STORE = {"id": "S1", "type": "store", "region": "north", "lat": 53.4, "lon": -2.2}
DC = {"id": "DC1", "type": "dc", "region": "north", "lat": 53.5, "lon": -2.3}
ITEM = {"sku": "TEE", "category": "tops", "price": 20.0, "cost": 8.0}


async def events(client: Any, *batch: dict[str, Any]) -> Any:
    return await client.post("/v1/stock/events", json=list(batch))


def sale(event_id: str, qty: int, location: str = "S1") -> dict[str, Any]:
    return {"event_id": event_id, "type": "sale", "sku": "TEE", "location": location, "qty": qty}


def receipt(event_id: str, qty: int, location: str = "S1") -> dict[str, Any]:
    return {"event_id": event_id, "type": "receipt", "sku": "TEE", "location": location, "qty": qty}


async def listed(api: ApiClient, **params: Any) -> list[dict[str, Any]]:
    response = await api.as_("stock").get("/v1/exceptions", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["exceptions"]
    return found


async def test_a_pos_sale_past_the_stock_opens_negative_inventory_and_a_receipt_resolves_it(
    workflow_api: ApiClient,
) -> None:
    stock = workflow_api.as_("stock")
    await stock.put("/v1/stock", json=[{"sku": "TEE", "location": "S1", "sellable": 1}])
    await events(stock, sale("pos-1", 3))
    await events(stock, sale("pos-2", 1))  # the same condition: still one record
    [record] = await listed(workflow_api, kind="negative_inventory")
    assert (record["key"], record["state"], record["sku"], record["location"]) == (
        "TEE@S1",
        "open",
        "TEE",
        "S1",
    )
    assert (record["detail"]["event_id"], record["detail"]["shortfall"], record["detail"]["sellable"]) == (
        "pos-1",
        2,
        -2,
    )
    await events(stock, receipt("rcv-1", 2))  # -1: still short
    assert (await listed(workflow_api, kind="negative_inventory"))[0]["state"] == "open"
    await events(stock, receipt("rcv-2", 1))  # back to 0: not negative any more
    [record] = await listed(workflow_api, kind="negative_inventory")
    assert (record["state"], record["resolved_by"]) == ("resolved", "system")


async def test_expected_at_is_recorded_for_a_transfer_out_and_refused_elsewhere(
    workflow_api: ApiClient,
) -> None:
    stock = workflow_api.as_("stock")
    await stock.put("/v1/stock", json=[{"sku": "TEE", "location": "DC1", "sellable": 50}])
    due = "2026-03-04T12:00:00Z"
    bad = await events(stock, receipt("rcv-1", 5, "DC1"), {**sale("pos-1", 1, "DC1"), "expected_at": due})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "[1].expected_at"
    naive = await events(
        stock,
        {
            **sale("x", 1, "DC1"),
            "type": "transfer_out",
            "to_location": "S1",
            "expected_at": "2026-03-04T12:00:00",
        },
    )
    assert naive.status_code == 422 and naive.json()["errors"][0]["field"] == "[0].expected_at"
    assert (await stock.get("/v1/stock/TEE")).json()["totals"]["sellable"] == 50  # nothing applied
    shipped = {
        "event_id": "out-1",
        "type": "transfer_out",
        "sku": "TEE",
        "location": "DC1",
        "qty": 10,
        "to_location": "S1",
        "reference": "t-77",
        "expected_at": due,
    }
    assert (await events(stock, shipped)).json()["applied"] == 1
    async with workflow_api.session() as session:
        [row] = (await session.execute(select(ExpectedReceipt))).scalars().all()
    assert (row.event_id, row.to_location, row.outstanding, row.reference) == ("out-1", "S1", 10, "t-77")
    await events(
        stock,
        {
            **shipped,
            "event_id": "in-1",
            "type": "transfer_in",
            "location": "S1",
            "to_location": None,
            "expected_at": None,
        },
    )
    async with workflow_api.session() as session:
        [row] = (await session.execute(select(ExpectedReceipt))).scalars().all()
    assert row.outstanding == 0


async def test_a_promoted_sku_at_its_channel_floor_is_an_oversell_risk_until_restocked(
    workflow_api: ApiClient,
) -> None:
    stock = workflow_api.as_("stock")
    await stock.put("/v1/locations", json=[STORE, DC])
    await stock.put("/v1/items", json=[ITEM])
    now = datetime.now(UTC)
    promotion = {
        "id": "spring",
        "skus": ["TEE"],
        "locations": ["S1"],
        "channels": ["ecommerce"],
        "start": (now - timedelta(days=1)).isoformat(),
        "end": (now + timedelta(days=1)).isoformat(),
    }
    assert (await stock.put("/v1/promotions", json=[promotion])).status_code == 200
    await stock.put("/v1/stock", json=[{"sku": "TEE", "location": "S1", "sellable": 5}])
    await events(stock, sale("pos-1", 1))  # 4 left, above the online floor of 2 at a store
    assert await listed(workflow_api, kind="oversell_risk") == []
    await events(stock, sale("pos-2", 2))  # 2 left: at the floor
    [risk] = await listed(workflow_api, kind="oversell_risk")
    assert (risk["key"], risk["state"]) == ("TEE@S1/ecommerce", "open")
    assert (risk["detail"]["available"], risk["detail"]["floor"], risk["detail"]["promotion"]) == (
        2,
        2,
        "spring",
    )
    await events(stock, receipt("rcv-1", 10))
    [risk] = await listed(workflow_api, kind="oversell_risk")
    assert risk["state"] == "resolved"


async def raise_at(api: ApiClient, kind: str, key: str, location: str | None, opened_at: datetime) -> None:
    async with api.session() as session, session.begin():
        await raise_exception(session, kind, key, location=location, detail={}, now=opened_at)


async def test_exceptions_filter_by_kind_state_location_and_age_a_page_at_a_time(
    workflow_api: ApiClient,
) -> None:
    now = datetime.now(UTC)
    await raise_at(workflow_api, "stuck_approval", "c-1", None, now - timedelta(hours=30))
    await raise_at(workflow_api, "negative_inventory", "TEE@S1", "S1", now - timedelta(hours=5))
    await raise_at(workflow_api, "negative_inventory", "TEE@S2", "S2", now - timedelta(minutes=5))
    await raise_at(workflow_api, "delayed_receipt", "out-1", "S1", now - timedelta(days=3))
    assert [e["key"] for e in await listed(workflow_api)] == ["out-1", "TEE@S2", "TEE@S1", "c-1"]
    assert [e["key"] for e in await listed(workflow_api, kind="negative_inventory")] == ["TEE@S2", "TEE@S1"]
    assert [e["key"] for e in await listed(workflow_api, location="S1")] == ["out-1", "TEE@S1"]
    assert [e["key"] for e in await listed(workflow_api, older_than="4h")] == ["out-1", "TEE@S1", "c-1"]
    assert [e["key"] for e in await listed(workflow_api, older_than="1d")] == ["out-1", "c-1"]
    assert await listed(workflow_api, state="acknowledged") == []
    first = (await workflow_api.as_("planner").get("/v1/exceptions", params={"limit": 3})).json()
    assert len(first["exceptions"]) == 3 and first["next"] == first["exceptions"][-1]["id"]
    second = (
        await workflow_api.as_("planner").get("/v1/exceptions", params={"limit": 3, "before": first["next"]})
    ).json()
    assert [e["key"] for e in second["exceptions"]] == ["c-1"] and second["next"] is None


async def test_bad_filters_are_422_naming_the_query_field(workflow_api: ApiClient) -> None:
    stock = workflow_api.as_("stock")
    for params, field in (
        ({"older_than": "yesterday"}, "query.older_than"),
        ({"kind": "fire"}, "query.kind"),
        ({"state": "closed"}, "query.state"),
        ({"limit": "many"}, "query.limit"),
    ):
        response = await stock.get("/v1/exceptions", params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["errors"][0]["field"] == field


async def test_a_person_acknowledges_then_resolves_and_the_trail_records_it(workflow_api: ApiClient) -> None:
    await raise_at(workflow_api, "negative_inventory", "TEE@S1", "S1", datetime.now(UTC))
    [record] = await listed(workflow_api)
    stock = workflow_api.as_("stock")
    url = f"/v1/exceptions/{record['id']}"
    bad = await stock.post(f"{url}/acknowledge", json={"assignee": "", "comment": "x"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "assignee"
    unknown = await stock.post(f"{url}/acknowledge", json={"owner": "ana"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "owner"
    assert (await listed(workflow_api))[0]["state"] == "open"

    acked = await stock.post(f"{url}/acknowledge", json={"assignee": "store-S1", "comment": "recounting"})
    assert acked.status_code == 200
    assert (acked.json()["state"], acked.json()["assignee"]) == ("acknowledged", "store-S1")
    twice = await stock.post(f"{url}/acknowledge")
    assert twice.status_code == 409 and twice.json()["errors"][0]["field"] == "state"
    done = await workflow_api.as_("planner").post(f"{url}/resolve", json={"comment": "count corrected"})
    assert (done.json()["state"], done.json()["resolved_by"], done.json()["comment"]) == (
        "resolved",
        "test-planner",
        "count corrected",
    )
    assert (await stock.post(f"{url}/resolve")).status_code == 409
    assert (await stock.post("/v1/exceptions/nope/resolve")).status_code == 404
    assert (await workflow_api.as_("decide").post(f"{url}/resolve")).status_code == 403

    trail = (
        await workflow_api.as_("admin").get("/v1/audit", params={"subject": f"exception:{record['id']}"})
    ).json()
    assert [(e["actor"], e["action"], e["note"]) for e in trail["entries"]] == [
        ("test-stock", "exception.acknowledge", "recounting"),
        ("test-planner", "exception.resolve", "count corrected"),
    ]
