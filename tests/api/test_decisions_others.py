"""Availability, reorder, transfer and markdown decisions on the real app (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.rules.trial import TrialWorker
from service.stock import SnapshotRow
from tests.api.decisions_fixtures import NORTH, DecisionsApi, decisions_api


@pytest.fixture
async def dapi(database_url: str, trials: TrialWorker) -> AsyncIterator[DecisionsApi]:
    async with decisions_api(database_url, trials) as api:
        yield api


def sku_row(body: dict[str, Any], sku: str) -> dict[str, Any]:
    return next(row for row in body["decision"]["skus"] if row["sku"] == sku)


async def test_availability_sums_eligible_locations_above_the_channel_floors(dapi: DecisionsApi) -> None:
    body = (await dapi.post("availability", {"channel": "ecommerce", "skus": ["TEE-001"]})).json()
    # DCs 30 + 12, Leeds 9 - 2, York 8 - 2, Camden 5 - 1
    assert sku_row(body, "TEE-001")["sellable"] == 42 + 7 + 6 + 4


async def test_availability_for_the_marketplace_counts_dc_stock_above_its_floor_only(
    dapi: DecisionsApi,
) -> None:
    body = (await dapi.post("availability", {"channel": "marketplace", "skus": ["TEE-001"]})).json()
    assert sku_row(body, "TEE-001")["sellable"] == 20 + 2


async def test_a_store_below_its_low_stock_threshold_sells_nothing_online(dapi: DecisionsApi) -> None:
    body = (
        await dapi.post("availability", {"channel": "ecommerce", "skus": ["TV-003"]}, trace="full")
    ).json()
    rows = {row["location"]: row for row in sku_row(body, "TV-003")["locations"]}
    assert rows["store-leeds"]["sellable"] == 0
    assert sku_row(body, "TV-003")["sellable"] == 14


async def test_the_full_trace_gives_the_per_location_breakdown(dapi: DecisionsApi) -> None:
    body = (
        await dapi.post("availability", {"channel": "ecommerce", "skus": ["MUG-002"]}, trace="full")
    ).json()
    assert {row["location"] for row in sku_row(body, "MUG-002")["locations"]} == {
        "dc-manchester",
        "store-leeds",
    }


async def test_the_default_trace_lists_every_distinct_evaluation_also_after_untraced_requests(
    dapi: DecisionsApi,
) -> None:
    request = {"channel": "ecommerce", "skus": ["TEE-001", "MUG-002"]}
    untraced = (await dapi.post("availability", request, trace="none")).json()
    assert untraced["trace"] is None
    # the untraced request filled the shared answers; the traced ones read their evaluations from them
    default = (await dapi.post("availability", request)).json()
    full = (await dapi.post("availability", request, trace="full")).json()
    assert default["decision"] == untraced["decision"]
    evaluations = default["trace"]["evaluations"]
    seen = [
        (e["facts"]["item"]["category"], e["facts"]["location"]["type"], e["facts"]["location"]["region"])
        for e in evaluations
    ]
    # 2 kinds of item x 4 kinds of location (dc north, dc south, store north, dark store south)
    assert seen == [
        (category, kind, region)
        for category in ("apparel", "homeware")
        for kind, region in (("dc", "north"), ("dc", "south"), ("store", "north"), ("dark_store", "south"))
    ]
    assert all(e["rules"] for e in evaluations)
    assert [e["facts"] for e in evaluations] == [e["facts"] for e in full["trace"]["evaluations"]]


async def test_the_kept_rules_trace_is_answered_and_logged_alike(dapi: DecisionsApi) -> None:
    # the second request answers the `rules` trace kept (encoded) with the shared answers, and logs it
    request = {"channel": "ecommerce", "skus": ["MUG-002", "TEE-001"]}
    first, second = [(await dapi.post("availability", request)).json() for _ in range(2)]
    assert second["trace"] == first["trace"] and len(second["trace"]["evaluations"]) == 8
    for answered in (first, second):
        response = await dapi.client.as_("decide").get(f"/v1/decisions/{answered['decision_id']}")
        assert response.status_code == 200 and response.json()["trace"] == answered["trace"]


async def test_availability_agrees_with_what_a_reservation_grants(dapi: DecisionsApi) -> None:
    await dapi.snapshot(
        [SnapshotRow("MUG-002", "dc-manchester", 0), SnapshotRow("MUG-002", "store-leeds", 6)]
    )
    sellable = sku_row(
        (await dapi.post("availability", {"channel": "ecommerce", "skus": ["MUG-002"]})).json(), "MUG-002"
    )["sellable"]
    order = {
        "order_id": "o-9",
        "channel": "ecommerce",
        "fulfillment": "ship",
        "destination": NORTH,
        "reserve": True,
    }
    too_many = await dapi.post("allocation", {**order, "lines": [{"sku": "MUG-002", "qty": sellable + 1}]})
    assert too_many.json()["decision"]["reservation"] is None
    exact = await dapi.post("allocation", {**order, "lines": [{"sku": "MUG-002", "qty": sellable}]})
    assert exact.json()["decision"]["reservation"]["status"] == "held"
    after = (await dapi.post("availability", {"channel": "ecommerce", "skus": ["MUG-002"]})).json()
    assert sku_row(after, "MUG-002")["sellable"] == 0


async def test_an_unknown_sku_in_availability_is_422(dapi: DecisionsApi) -> None:
    response = await dapi.post("availability", {"channel": "ecommerce", "skus": ["TEE-001", "NOPE"]})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "skus[1]"


async def test_reorder_below_the_reorder_point_orders_whole_case_packs(dapi: DecisionsApi) -> None:
    body = (
        await dapi.post("reorder", {"sku": "MUG-002", "location": "dc-manchester", "daily_rate": 2.0})
    ).json()
    decision = body["decision"]
    # projected 4 + 12 in transit = 16; DC rule: ROP 2 x 14 = 28, order up to 2 x 42 = 84 -> 68 -> 72 (6 cases)
    assert (decision["reorder"], decision["qty"], decision["release"]) == (True, 72, "auto_release")
    assert body["trace"]["breakdown"]["position"]["projected"] == 16


async def test_reorder_above_the_reorder_point_does_not_order(dapi: DecisionsApi) -> None:
    body = (
        await dapi.post("reorder", {"sku": "TEE-001", "location": "dc-manchester", "daily_rate": 0.5})
    ).json()
    assert body["decision"]["reorder"] is False


async def test_reorder_with_a_promotion_ahead_needs_review(dapi: DecisionsApi) -> None:
    body = (
        await dapi.post(
            "reorder", {"sku": "TEE-001", "location": "store-york", "daily_rate": 3.0, "promo_upcoming": True}
        )
    ).json()
    assert body["decision"]["release"] == "review"


async def test_reorder_scan_decides_every_matching_sku_location(dapi: DecisionsApi) -> None:
    body = (await dapi.post("reorder/scan", {"default_daily_rate": 2.0, "include_all": True})).json()
    assert body["decision"]["summary"]["scanned"] == 9
    assert len(body["decision"]["items"]) == 9


async def test_reorder_scan_filters_by_location_type(dapi: DecisionsApi) -> None:
    body = (await dapi.post("reorder/scan", {"location_types": ["dc"], "default_daily_rate": 2.0})).json()
    assert body["decision"]["summary"]["scanned"] == 4


def transfer(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transfer_id": "t-1",
        "sku": "TEE-001",
        "qty": 2,
        "from_location": "store-leeds",
        "to_location": "store-york",
        "requested_by": {"id": "u-7", "role": "store_associate"},
        "reason": "size run",
    }
    body.update(overrides)
    return body


async def test_a_small_local_transfer_is_approved(dapi: DecisionsApi) -> None:
    body = (await dapi.post("transfer", transfer())).json()
    assert body["decision"]["outcome"] == "approve"
    assert body["trace"]["facts"]["source"]["available_after"] == 7


async def test_a_transfer_below_the_source_floor_is_rejected(dapi: DecisionsApi) -> None:
    body = (await dapi.post("transfer", transfer(qty=6))).json()
    assert body["decision"]["outcome"] == "reject"
    assert body["trace"]["facts"]["source"]["floor"] == 4


async def test_the_requester_is_replaced_by_the_next_level_and_the_trace_says_so(dapi: DecisionsApi) -> None:
    # 20 TVs from London to Leeds: cross-region and above 5,000 at cost -> regional manager and director
    body = (
        await dapi.post(
            "transfer",
            transfer(
                sku="TV-003",
                qty=10,
                from_location="dc-london",
                to_location="store-leeds",
                requested_by={"id": "u-1", "role": "regional_manager"},
            ),
        )
    ).json()
    decision = body["decision"]
    assert decision["outcome"] == "route"
    assert "regional_manager" not in decision["approvers"]
    assert body["trace"]["requester_substitutions"][0]["replaced"] == "regional_manager"


async def test_a_transfer_to_its_own_source_is_422(dapi: DecisionsApi) -> None:
    response = await dapi.post("transfer", transfer(to_location="store-leeds"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "to_location"


def markdown(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "markdown_id": "m-1",
        "sku": "TEE-001",
        "current_price": 20.0,
        "proposed_price": 17.0,
        "requested_by": {"id": "u-3", "role": "merchandiser"},
        "effective_from": "2026-12-01",
    }
    body.update(overrides)
    return body


async def test_a_shallow_markdown_on_small_exposure_is_approved(dapi: DecisionsApi) -> None:
    body = (await dapi.post("markdown", markdown())).json()
    assert body["decision"]["outcome"] == "approve"
    assert body["trace"]["facts"]["markdown"]["depth"] == 0.15


async def test_a_season_end_stored_before_dates_were_checked_is_422_naming_the_sku(
    dapi: DecisionsApi,
) -> None:
    from sqlalchemy import update

    from service.db.models import Item

    async with dapi.client.session() as session:  # written as PUT /v1/items once let it through
        await session.execute(update(Item).where(Item.sku == "TEE-001").values(season_end="2025-13-45"))
        await session.commit()
    dapi.client.services.master_data.invalidate()
    response = await dapi.post("markdown", markdown())
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "sku"
    assert "2025-13-45" in response.json()["errors"][0]["reason"]


async def test_a_markdown_below_cost_mid_season_is_rejected(dapi: DecisionsApi) -> None:
    body = (await dapi.post("markdown", markdown(proposed_price=7.0))).json()
    assert body["decision"]["outcome"] == "reject"


async def test_a_deep_markdown_routes_to_a_director_and_never_to_its_requester(dapi: DecisionsApi) -> None:
    body = (
        await dapi.post(
            "markdown",
            markdown(proposed_price=9.0, requested_by={"id": "u-4", "role": "merchandising_director"}),
        )
    ).json()
    decision = body["decision"]
    assert decision["outcome"] == "route"
    assert decision["approvers"] == ["commercial_director"]


async def test_a_markdown_that_raises_the_price_is_422(dapi: DecisionsApi) -> None:
    response = await dapi.post("markdown", markdown(proposed_price=25.0))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "proposed_price"
