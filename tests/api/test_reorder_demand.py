"""Reorder decisions read the demand rate the stock ledger keeps from POS sales posted to the stock API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.domain.reorder import update_demand_rate
from service.rules.trial import TrialWorker
from tests.api.decisions_fixtures import DecisionsApi, decisions_api


@pytest.fixture
async def dapi(database_url: str, trials: TrialWorker) -> AsyncIterator[DecisionsApi]:
    async with decisions_api(database_url, trials) as api:
        yield api


async def sell(dapi: DecisionsApi, sku: str, location: str, *quantities: int) -> None:
    events = [
        {
            "event_id": f"pos-{sku}-{location}-{i}",
            "type": "sale",
            "sku": sku,
            "location": location,
            "qty": qty,
        }
        for i, qty in enumerate(quantities)
    ]
    response = await dapi.client.as_("stock").post("/v1/stock/events", json=events)
    assert response.status_code == 200, response.text


def demand(body: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = body["trace"]["demand"]
    return found


async def test_reorder_without_a_rate_uses_the_ledgers_rate_from_sales(dapi: DecisionsApi) -> None:
    await sell(dapi, "TEE-001", "dc-manchester", 7, 7)
    body = (await dapi.post("reorder", {"sku": "TEE-001", "location": "dc-manchester"})).json()
    # both sales at (nearly) the same instant; read moments later, so decay is negligible
    expected = update_demand_rate(update_demand_rate(0.0, 7, 0.0), 7, 0.0)
    assert demand(body)["source"] == "ledger"
    assert demand(body)["daily_rate"] == pytest.approx(expected, rel=1e-4)


async def test_reorder_on_the_ledgers_rate_decides_as_with_that_rate_given(dapi: DecisionsApi) -> None:
    await sell(dapi, "MUG-002", "dc-manchester", 2, 2)
    from_ledger = (await dapi.post("reorder", {"sku": "MUG-002", "location": "dc-manchester"})).json()
    rate = demand(from_ledger)["daily_rate"]
    given = {"sku": "MUG-002", "location": "dc-manchester", "daily_rate": rate}
    assert (await dapi.post("reorder", given)).json()["decision"] == from_ledger["decision"]


async def test_rate_in_the_request_wins_over_the_ledgers(dapi: DecisionsApi) -> None:
    await sell(dapi, "TEE-001", "store-leeds", 3)
    body = (
        await dapi.post("reorder", {"sku": "TEE-001", "location": "store-leeds", "daily_rate": 0.25})
    ).json()
    assert demand(body) == {"daily_rate": 0.25, "source": "request"}


async def test_reorder_for_a_location_without_sales_has_no_ledger_rate(dapi: DecisionsApi) -> None:
    await sell(dapi, "TEE-001", "store-leeds", 3)
    body = (await dapi.post("reorder", {"sku": "TEE-001", "location": "store-york"})).json()
    assert demand(body) == {"daily_rate": 0.0, "source": "none"}


async def test_scan_uses_the_ledgers_rate_where_there_were_sales_and_the_default_elsewhere(
    dapi: DecisionsApi,
) -> None:
    await sell(dapi, "TV-003", "store-leeds", 1)
    body = (
        await dapi.post("reorder/scan", {"default_daily_rate": 2.0, "include_all": True}, trace="full")
    ).json()
    sources = {(row["sku"], row["location"]): row["demand"]["source"] for row in body["trace"]["items"]}
    assert sources.pop(("TV-003", "store-leeds")) == "ledger"
    assert set(sources.values()) == {"default"}
