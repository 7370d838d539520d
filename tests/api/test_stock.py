"""Stock endpoints: snapshots, events, levels with totals, anomalies; bad input changes nothing."""

from __future__ import annotations

from tests.api.stock_fixtures import stock_api
from tests.apiclient import ApiClient

__all__ = ["stock_api"]

ROWS = [
    {"sku": "TEE", "location": "S1", "sellable": 5, "damaged": 1, "return_pending": 2, "in_transit": 3},
    {"sku": "TEE", "location": "S2", "sellable": 1},
]


async def test_snapshot_then_levels_show_every_bucket_and_totals(stock_api: ApiClient) -> None:
    stock = stock_api.as_("stock")
    assert (await stock.put("/v1/stock", json=ROWS)).json() == {"written": 2}
    body = (await stock.get("/v1/stock/TEE")).json()
    assert body["locations"][0] == {
        "location": "S1",
        "sellable": 5,
        "reserved": 0,
        "available": 5,
        "damaged": 1,
        "return_pending": 2,
        "in_transit": 3,
    }
    assert body["totals"] == {
        "sellable": 6,
        "reserved": 0,
        "available": 6,
        "damaged": 1,
        "return_pending": 2,
        "in_transit": 3,
    }


async def test_oversold_location_does_not_hide_stock_elsewhere_in_totals(stock_api: ApiClient) -> None:
    stock = stock_api.as_("stock")
    await stock.put("/v1/stock", json=ROWS)
    await stock.post(
        "/v1/stock/events",
        json=[{"event_id": "pos-1", "type": "sale", "sku": "TEE", "location": "S2", "qty": 3}],
    )
    totals = (await stock.get("/v1/stock/TEE")).json()["totals"]
    assert (totals["sellable"], totals["available"]) == (3, 5)


async def test_bad_snapshot_row_is_422_naming_the_field_and_changes_nothing(stock_api: ApiClient) -> None:
    stock = stock_api.as_("stock")
    response = await stock.put("/v1/stock", json=[ROWS[0], {**ROWS[1], "sellable": -1}])
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"] == "[1].sellable"
    assert (await stock.get("/v1/stock/TEE")).status_code == 404


async def test_events_are_applied_once_and_counted(stock_api: ApiClient) -> None:
    stock = stock_api.as_("stock")
    batch = [{"event_id": "rcv-1", "type": "receipt", "sku": "TEE", "location": "S1", "qty": 4}]
    first = (await stock.post("/v1/stock/events", json=batch)).json()
    again = (await stock.post("/v1/stock/events", json=batch)).json()
    assert (first["applied"], first["duplicates"]) == (1, 0)
    assert (again["applied"], again["duplicates"]) == (0, 1)
    assert (await stock.get("/v1/stock/TEE")).json()["totals"]["sellable"] == 4


async def test_pos_sale_shortfall_is_listed_in_exceptions(stock_api: ApiClient) -> None:
    stock = stock_api.as_("stock")
    await stock.put("/v1/stock", json=ROWS)
    await stock.post(
        "/v1/stock/events",
        json=[{"event_id": "pos-9", "type": "sale", "sku": "TEE", "location": "S2", "qty": 3}],
    )
    [exception] = (await stock.get("/v1/exceptions")).json()["exceptions"]
    assert (exception["kind"], exception["state"], exception["location"]) == (
        "negative_inventory",
        "open",
        "S2",
    )
    assert (exception["detail"]["event_id"], exception["detail"]["shortfall"]) == ("pos-9", 2)
    [anomaly] = (await stock.get("/v1/stock-anomalies")).json()["anomalies"]
    assert (anomaly["kind"], anomaly["event_id"], anomaly["shortfall"]) == ("negative_inventory", "pos-9", 2)


async def test_bad_event_is_422_naming_the_field_and_changes_nothing(stock_api: ApiClient) -> None:
    stock = stock_api.as_("stock")
    response = await stock.post(
        "/v1/stock/events",
        json=[
            {"event_id": "rcv-1", "type": "receipt", "sku": "TEE", "location": "S1", "qty": 4},
            {"event_id": "ret-1", "type": "return_disposition", "sku": "TEE", "location": "S1", "qty": 1},
        ],
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "[1].disposition"
    assert (await stock.get("/v1/stock/TEE")).status_code == 404


async def test_unknown_sku_is_404(stock_api: ApiClient) -> None:
    response = await stock_api.as_("decide").get("/v1/stock/NOPE")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_writing_stock_needs_the_stock_role(stock_api: ApiClient) -> None:
    response = await stock_api.as_("decide").put("/v1/stock", json=ROWS)
    assert response.status_code == 403
