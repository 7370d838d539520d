"""Reservation endpoints: 201 with the hold, 409 naming short lines, idempotency, commit and release."""

from __future__ import annotations

from typing import Any

from tests.api.stock_fixtures import stock_api
from tests.apiclient import ApiClient

__all__ = ["stock_api"]


def order(key: str, *lines: tuple[str, str, int], **extra: Any) -> dict[str, Any]:
    return {
        "order_id": f"o-{key}",
        "channel": "web",
        "idempotency_key": key,
        "lines": [{"sku": s, "location": loc, "qty": q} for s, loc, q in lines],
        "ttl_seconds": 600,
        **extra,
    }


async def seeded(api: ApiClient) -> None:
    rows = [
        {"sku": "TEE", "location": "S1", "sellable": 5},
        {"sku": "TEE", "location": "S2", "sellable": 1},
        {"sku": "MUG", "location": "S1", "sellable": 2},
    ]
    assert (await api.as_("stock").put("/v1/stock", json=rows)).status_code == 200


async def levels(api: ApiClient, sku: str) -> dict[str, dict[str, int]]:
    body = (await api.as_("stock").get(f"/v1/stock/{sku}")).json()
    return {row["location"]: row for row in body["locations"]}


async def test_granted_reservation_is_201_with_its_lines_and_expiry(stock_api: ApiClient) -> None:
    await seeded(stock_api)
    response = await stock_api.as_("decide").post("/v1/reservations", json=order("k1", ("TEE", "S1", 2)))
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "held"
    assert body["lines"] == [{"sku": "TEE", "location": "S1", "qty": 2}]
    assert body["expires_at"] > body["created_at"]
    assert (await levels(stock_api, "TEE"))["S1"]["reserved"] == 2


async def test_short_order_is_409_naming_each_short_line_and_holds_nothing(stock_api: ApiClient) -> None:
    await seeded(stock_api)
    response = await stock_api.as_("decide").post(
        "/v1/reservations", json=order("k1", ("TEE", "S1", 1), ("TEE", "S2", 3), ("MUG", "S1", 9))
    )
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    errors = {e["field"]: e for e in response.json()["errors"]}
    assert set(errors) == {"lines[1]", "lines[2]"}
    assert (errors["lines[1]"]["requested"], errors["lines[1]"]["available"]) == (3, 1)
    assert (await levels(stock_api, "TEE"))["S1"]["reserved"] == 0


async def test_same_key_and_body_returns_the_same_reservation(stock_api: ApiClient) -> None:
    await seeded(stock_api)
    decide = stock_api.as_("decide")
    first = await decide.post("/v1/reservations", json=order("k1", ("TEE", "S1", 2)))
    again = await decide.post("/v1/reservations", json=order("k1", ("TEE", "S1", 2)))
    assert again.status_code == 201 and again.json() == first.json()
    assert (await levels(stock_api, "TEE"))["S1"]["reserved"] == 2


async def test_same_key_with_another_body_is_409(stock_api: ApiClient) -> None:
    await seeded(stock_api)
    decide = stock_api.as_("decide")
    await decide.post("/v1/reservations", json=order("k1", ("TEE", "S1", 2)))
    response = await decide.post("/v1/reservations", json=order("k1", ("TEE", "S1", 1)))
    assert response.status_code == 409
    assert response.json()["errors"][0]["field"] == "idempotency_key"


async def test_commit_takes_units_out_of_sellable_and_reserved(stock_api: ApiClient) -> None:
    await seeded(stock_api)
    decide = stock_api.as_("decide")
    rid = (await decide.post("/v1/reservations", json=order("k1", ("TEE", "S1", 2)))).json()["id"]
    response = await decide.post(f"/v1/reservations/{rid}/commit")
    assert response.status_code == 200 and response.json()["status"] == "committed"
    s1 = (await levels(stock_api, "TEE"))["S1"]
    assert (s1["sellable"], s1["reserved"]) == (3, 0)


async def test_release_gives_units_back_and_blocks_a_later_commit(stock_api: ApiClient) -> None:
    await seeded(stock_api)
    decide = stock_api.as_("decide")
    rid = (await decide.post("/v1/reservations", json=order("k1", ("TEE", "S1", 2)))).json()["id"]
    assert (await decide.post(f"/v1/reservations/{rid}/release")).json()["status"] == "released"
    assert (await levels(stock_api, "TEE"))["S1"]["reserved"] == 0
    assert (await decide.post(f"/v1/reservations/{rid}/commit")).status_code == 409


async def test_reservation_can_be_read_back(stock_api: ApiClient) -> None:
    await seeded(stock_api)
    decide = stock_api.as_("decide")
    created = (await decide.post("/v1/reservations", json=order("k1", ("TEE", "S1", 2)))).json()
    assert (await decide.get(f"/v1/reservations/{created['id']}")).json() == created


async def test_unknown_reservation_is_404(stock_api: ApiClient) -> None:
    decide = stock_api.as_("decide")
    assert (await decide.get("/v1/reservations/nope")).status_code == 404
    assert (await decide.post("/v1/reservations/nope/commit")).status_code == 404
    assert (await decide.post("/v1/reservations/nope/release")).status_code == 404


async def test_bad_line_is_422_naming_the_field(stock_api: ApiClient) -> None:
    await seeded(stock_api)
    response = await stock_api.as_("decide").post("/v1/reservations", json=order("k1", ("TEE", "S1", 0)))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "lines[0].qty"
    assert (await levels(stock_api, "TEE"))["S1"]["reserved"] == 0


async def test_partial_order_takes_what_there_is_and_says_what_is_short(stock_api: ApiClient) -> None:
    await seeded(stock_api)
    response = await stock_api.as_("decide").post(
        "/v1/reservations", json=order("k1", ("TEE", "S2", 3), allow_partial=True)
    )
    assert response.status_code == 201
    body = response.json()
    assert body["lines"] == [{"sku": "TEE", "location": "S2", "qty": 1}]
    assert body["short"] == [{"sku": "TEE", "location": "S2", "requested": 3, "available": 1}]


async def test_floor_protects_stock_for_other_channels(stock_api: ApiClient) -> None:
    await seeded(stock_api)
    body = order("k1", ("TEE", "S1", 3))
    body["lines"][0]["floor"] = 3
    response = await stock_api.as_("decide").post("/v1/reservations", json=body)
    assert response.status_code == 409
    assert response.json()["errors"][0]["available"] == 2


async def test_reserving_needs_the_decide_role(stock_api: ApiClient) -> None:
    response = await stock_api.as_("stock").post("/v1/reservations", json=order("k1", ("TEE", "S1", 1)))
    assert response.status_code == 403
