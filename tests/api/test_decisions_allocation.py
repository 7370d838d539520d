"""POST /v1/decisions/allocation on the real app, SQL stock, SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.rules.trial import TrialWorker
from tests.api.decisions_fixtures import NORTH, DecisionsApi, decisions_api


@pytest.fixture
async def dapi(database_url: str, trials: TrialWorker) -> AsyncIterator[DecisionsApi]:
    async with decisions_api(database_url, trials) as api:
        yield api


def order(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "order_id": "o-1",
        "channel": "ecommerce",
        "fulfillment": "ship",
        "destination": NORTH,
        "lines": [{"sku": "TEE-001", "qty": 2}],
    }
    body.update(overrides)
    return body


async def test_an_order_is_allocated_with_id_kind_ruleset_trace_and_timings(dapi: DecisionsApi) -> None:
    response = await dapi.post("allocation", order())
    assert response.status_code == 200, response.text
    body = response.json()
    assert uuid.UUID(body["decision_id"]).version == 7
    assert body["kind"] == "allocation"
    assert body["ruleset"]["name"] == "channel-priority" and len(body["ruleset"]["sha256"]) == 64
    assert body["ruleset"]["version"] == 1
    assert body["decision"]["status"] == "allocated"
    assert body["decision"]["lines"][0]["allocations"] == [{"location": "store-leeds", "qty": 2}]
    assert body["trace"]["rules"]["matched"][0]["rule"] == "baseline"
    assert "total_ms" in body["timings"]


async def test_a_marketplace_order_takes_only_dc_stock_above_its_floor(dapi: DecisionsApi) -> None:
    response = await dapi.post(
        "allocation", order(channel="marketplace", lines=[{"sku": "TEE-001", "qty": 20}])
    )
    decision = response.json()["decision"]
    # Manchester holds 30 with a floor of 10: exactly 20 may go
    assert decision["lines"][0]["allocations"] == [{"location": "dc-manchester", "qty": 20}]


async def test_a_marketplace_order_beyond_the_dc_floor_gets_nothing(dapi: DecisionsApi) -> None:
    response = await dapi.post(
        "allocation", order(channel="marketplace", lines=[{"sku": "TEE-001", "qty": 21}])
    )
    decision = response.json()["decision"]
    assert decision["status"] == "unallocated"
    assert decision["unallocated"] == 21


async def test_the_full_trace_lists_every_candidate_with_a_score_or_a_reason(dapi: DecisionsApi) -> None:
    response = await dapi.post("allocation", order(channel="marketplace"), trace="full")
    candidates = {c["location"]: c for c in response.json()["trace"]["candidates"][0]["locations"]}
    assert set(candidates) == {"dc-manchester", "dc-london", "store-leeds", "store-york", "dark-camden"}
    assert candidates["store-leeds"]["reason"] == "ineligible_type"
    assert "score" in candidates["dc-manchester"]


async def test_the_rules_trace_leaves_candidates_out(dapi: DecisionsApi) -> None:
    response = await dapi.post("allocation", order())
    assert "candidates" not in response.json()["trace"]


async def test_trace_none_answers_without_a_trace(dapi: DecisionsApi) -> None:
    response = await dapi.post("allocation", order(), trace="none")
    assert response.json()["trace"] is None


async def test_a_pickup_order_uses_only_the_pickup_store(dapi: DecisionsApi) -> None:
    body = order(fulfillment="pickup", pickup_location="store-york", destination=None)
    body.pop("destination")
    response = await dapi.post("allocation", {**body, "lines": [{"sku": "TEE-001", "qty": 1}]})
    assert response.json()["decision"]["lines"][0]["allocations"] == [{"location": "store-york", "qty": 1}]


async def test_reserving_holds_the_allocated_units(dapi: DecisionsApi) -> None:
    response = await dapi.post("allocation", order(reserve=True, idempotency_key="k-1"))
    decision = response.json()["decision"]
    assert decision["reservation"]["status"] == "held"
    levels = await dapi.levels(["TEE-001"])
    assert levels["TEE-001"]["store-leeds"].reserved == 2


async def test_the_same_idempotency_key_replays_the_same_decision(dapi: DecisionsApi) -> None:
    first = (await dapi.post("allocation", order(reserve=True, idempotency_key="k-2"))).json()
    second = (await dapi.post("allocation", order(reserve=True, idempotency_key="k-2"))).json()
    assert second["decision_id"] == first["decision_id"]
    assert second["replayed"] is True
    levels = await dapi.levels(["TEE-001"])
    assert levels["TEE-001"]["store-leeds"].reserved == 2


async def test_an_idempotency_key_reused_with_another_order_is_a_conflict(dapi: DecisionsApi) -> None:
    await dapi.post("allocation", order(reserve=True, idempotency_key="k-3"))
    response = await dapi.post("allocation", order(reserve=True, idempotency_key="k-3", order_id="o-2"))
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_an_unknown_sku_is_422_naming_the_line_and_nothing_is_logged_or_reserved(
    dapi: DecisionsApi,
) -> None:
    before = dapi.recorded()
    response = await dapi.post(
        "allocation", order(reserve=True, lines=[{"sku": "TEE-001", "qty": 1}, {"sku": "NOPE", "qty": 1}])
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"] == "lines[1].sku"
    assert dapi.recorded() == before
    levels = await dapi.levels(["TEE-001"])
    assert all(level.reserved == 0 for level in levels["TEE-001"].values())


async def test_a_zero_quantity_is_422_naming_the_field(dapi: DecisionsApi) -> None:
    response = await dapi.post("allocation", order(lines=[{"sku": "TEE-001", "qty": 0}]))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "lines[0].qty"


async def test_ship_without_a_destination_is_422(dapi: DecisionsApi) -> None:
    body = order()
    body.pop("destination")
    response = await dapi.post("allocation", body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "destination"


async def test_an_unknown_trace_level_is_422(dapi: DecisionsApi) -> None:
    response = await dapi.post("allocation", order(), trace="everything")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "trace"


async def test_a_key_without_the_decide_role_is_refused(dapi: DecisionsApi) -> None:
    response = await dapi.post("allocation", order(), role="planner")
    assert response.status_code == 403


async def test_the_decision_is_fetched_by_id_with_its_request(dapi: DecisionsApi) -> None:
    answered = (await dapi.post("allocation", order())).json()
    response = await dapi.client.as_("decide").get(f"/v1/decisions/{answered['decision_id']}")
    assert response.status_code == 200
    logged = response.json()
    assert logged["decision"] == answered["decision"]
    assert logged["request"]["order_id"] == "o-1"


async def test_an_unknown_decision_id_is_404(dapi: DecisionsApi) -> None:
    response = await dapi.client.as_("decide").get("/v1/decisions/0190d4a0-0000-7000-8000-000000000000")
    assert response.status_code == 404


async def test_a_retry_after_its_own_reservation_moved_the_stock_replays_the_decision(
    dapi: DecisionsApi,
) -> None:
    body = order(reserve=True, idempotency_key="k-4", lines=[{"sku": "TEE-001", "qty": 7}])
    first = (await dapi.post("allocation", body)).json()
    assert first["decision"]["lines"][0]["allocations"] == [{"location": "store-leeds", "qty": 7}]
    # Leeds now has nothing left above its floor, so a fresh plan would differ: the retry must not re-plan
    second = (await dapi.post("allocation", body)).json()
    assert (second["decision_id"], second["replayed"]) == (first["decision_id"], True)
    levels = await dapi.levels(["TEE-001"])
    assert sum(level.reserved for level in levels["TEE-001"].values()) == 7


# ---- daily capacity shared by the orders of a day -------------------------------------------------


async def with_leeds_capacity(dapi: DecisionsApi, daily: int) -> None:
    from tests.api.decisions_fixtures import LOCATIONS

    leeds = [{**loc, "daily_capacity": daily} for loc in LOCATIONS if loc["id"] == "store-leeds"]
    response = await dapi.client.as_("stock").put("/v1/locations", json=leeds)
    assert response.status_code == 200, response.text


def today() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).date().isoformat()


def taken_at(body: dict[str, Any], location: str) -> int:
    return sum(
        a["qty"]
        for line in body["decision"]["lines"]
        for a in line["allocations"]
        if a["location"] == location
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"order_id": "o 1"}, "order_id"),
        ({"order_id": "o" * 65}, "order_id"),
        ({"channel": "web|shop"}, "channel"),
    ],
)
async def test_an_order_the_stock_store_cannot_hold_is_422_naming_the_field_and_nothing_is_reserved(
    dapi: DecisionsApi, overrides: dict[str, Any], field: str
) -> None:
    response = await dapi.post("allocation", order(reserve=True, **overrides))
    assert response.status_code == 422, response.text
    assert [error["field"] for error in response.json()["errors"]] == [field]
    levels = await dapi.levels(["TEE-001"])
    assert all(level.reserved == 0 for level in levels["TEE-001"].values())


async def test_reserved_orders_use_up_a_locations_daily_capacity_across_orders(dapi: DecisionsApi) -> None:
    await with_leeds_capacity(dapi, 3)
    first = (await dapi.post("allocation", order(order_id="o-1", reserve=True))).json()
    assert taken_at(first, "store-leeds") == 2
    assert first["trace"]["capacity"] == {
        "day": today(),
        "locations": {"store-leeds": {"daily": 3, "used": 0}},
    }
    assert await dapi.capacity_used(today(), ["store-leeds"]) == {"store-leeds": 2}
    # Leeds still has 9 TEE but only 1 unit of today's capacity: the order of 2 goes elsewhere
    second = (await dapi.post("allocation", order(order_id="o-2", reserve=True))).json()
    assert second["decision"]["status"] == "allocated"
    assert taken_at(second, "store-leeds") <= 1
    used = await dapi.capacity_used(today(), ["store-leeds"])
    assert used == {"store-leeds": 2 + taken_at(second, "store-leeds")}
    levels = await dapi.levels(["TEE-001"])
    assert levels["TEE-001"]["store-leeds"].reserved == used["store-leeds"]


async def test_the_full_trace_names_a_location_out_of_capacity(dapi: DecisionsApi) -> None:
    await with_leeds_capacity(dapi, 2)
    assert (await dapi.post("allocation", order(order_id="o-1", reserve=True))).status_code == 200
    body = (await dapi.post("allocation", order(order_id="o-2"), trace="full")).json()
    candidates = {c["location"]: c for c in body["trace"]["candidates"][0]["locations"]}
    assert candidates["store-leeds"]["reason"] == "no_capacity"
    assert body["trace"]["capacity"]["locations"]["store-leeds"] == {"daily": 2, "used": 2}


async def test_an_order_without_reserve_uses_no_capacity(dapi: DecisionsApi) -> None:
    await with_leeds_capacity(dapi, 2)
    for n in range(3):
        body = (await dapi.post("allocation", order(order_id=f"o-{n}"))).json()
        assert taken_at(body, "store-leeds") == 2
    assert await dapi.capacity_used(today(), ["store-leeds"]) == {"store-leeds": 0}


async def test_a_released_reservation_gives_its_capacity_back(dapi: DecisionsApi) -> None:
    await with_leeds_capacity(dapi, 2)
    first = (await dapi.post("allocation", order(order_id="o-1", reserve=True))).json()
    assert taken_at(first, "store-leeds") == 2
    blocked = (await dapi.post("allocation", order(order_id="o-2"))).json()
    assert taken_at(blocked, "store-leeds") == 0
    reservation = first["decision"]["reservation"]["id"]
    released = await dapi.client.as_("decide").post(f"/v1/reservations/{reservation}/release")
    assert released.status_code == 200, released.text
    assert await dapi.capacity_used(today(), ["store-leeds"]) == {"store-leeds": 0}
    again = (await dapi.post("allocation", order(order_id="o-3", reserve=True))).json()
    assert taken_at(again, "store-leeds") == 2


async def test_concurrent_orders_never_take_more_than_the_days_capacity(dapi: DecisionsApi) -> None:
    import asyncio

    await with_leeds_capacity(dapi, 3)
    responses = await asyncio.gather(
        *(
            dapi.post(
                "allocation", order(order_id=f"o-{n}", reserve=True, lines=[{"sku": "TEE-001", "qty": 1}])
            )
            for n in range(12)
        )
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    at_leeds = sum(taken_at(r.json(), "store-leeds") for r in responses)
    assert at_leeds <= 3
    used = await dapi.capacity_used(today(), ["store-leeds"])
    levels = await dapi.levels(["TEE-001"])
    assert used["store-leeds"] == levels["TEE-001"]["store-leeds"].reserved == at_leeds


async def test_the_capacity_endpoint_shows_what_each_location_used_today(dapi: DecisionsApi) -> None:
    await with_leeds_capacity(dapi, 5)
    assert (await dapi.post("allocation", order(order_id="o-1", reserve=True))).status_code == 200
    client = dapi.client.as_("planner")
    body = (await client.get("/v1/capacity")).json()
    assert body == {
        "day": today(),
        "locations": [{"location": "store-leeds", "daily_capacity": 5, "used": 2, "remaining": 3}],
    }
    other = (await client.get("/v1/capacity", params={"day": "2026-01-02", "location": "store-leeds"})).json()
    assert other["locations"] == [{"location": "store-leeds", "daily_capacity": 5, "used": 0, "remaining": 5}]
    bad = await client.get("/v1/capacity", params={"day": "02/01/2026"})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["errors"][0]["field"] == "query.day"
    impossible = await client.get("/v1/capacity", params={"day": "2026-02-30"})
    assert impossible.status_code == 422
    assert impossible.json()["errors"][0]["field"] == "query.day"
    missing = await client.get("/v1/capacity", params={"location": "store-york"})
    assert missing.status_code == 404 and missing.json()["errors"][0]["reason"] == "has no daily capacity"
