"""Approved transfers on the Redis stock backend: the move is one event by case id, applied once even when
a worker stops around it and the recovery pass runs it again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from service.db.engine import create_engine
from service.db.migrate import upgrade
from service.settings import DatabaseSettings
from tests.api.approvals_fixtures import START, ApprovalsApi, transfer
from tests.api.decisions_fixtures import ITEMS, LOCATIONS, DecisionsApi
from tests.api.test_approvals import crash_at
from tests.apiclient import api_client, make_settings


@pytest.fixture
async def wf(sqlite_url: str, redis_url: str) -> AsyncIterator[ApprovalsApi]:
    engine = create_engine(DatabaseSettings(url=sqlite_url))
    await upgrade(engine)
    await engine.dispose()
    async with api_client(make_settings(sqlite_url, stock_backend="redis", redis_url=redis_url)) as client:
        for path, rows in (("/v1/locations", LOCATIONS), ("/v1/items", ITEMS)):
            assert (await client.as_("stock").put(path, json=rows)).status_code == 200
        stock = [
            {"sku": "TV-003", "location": "dc-manchester", "sellable": 10},
            {"sku": "TV-003", "location": "store-leeds", "sellable": 2},
        ]
        assert (await client.as_("stock").put("/v1/stock", json=stock)).status_code == 200
        yield ApprovalsApi(DecisionsApi(client, sqlite_url))


async def levels(wf: ApprovalsApi) -> dict[str, Any]:
    body = (await wf.client.as_("stock").get("/v1/stock/TV-003")).json()
    return {row["location"]: row for row in body["locations"]}


@pytest.mark.parametrize("point", ["before_move", "after_move"])
async def test_recovery_moves_the_stock_of_an_approved_transfer_once(wf: ApprovalsApi, point: str) -> None:
    case = (await wf.file("transfer", transfer())).json()["case"]
    wf.workflow.hook = crash_at(point)
    stopped = (await wf.act(case["id"], "approve", "ana", "store_manager")).json()
    wf.workflow.hook = None
    assert stopped["status"] == "executed"
    moved = (await wf.sweep(START + timedelta(minutes=5)))["moved"]
    assert moved == (1 if point == "before_move" else 0)
    await wf.sweep(START + timedelta(minutes=10))
    after = await levels(wf)
    assert after["dc-manchester"]["sellable"] == 8 and after["store-leeds"]["in_transit"] == 2
    assert (await wf.get(f"/v1/approvals/{case['id']}")).json()["status"] == "executed"


async def test_floor_checks_made_together_each_answer_their_own_transfer(wf: ApprovalsApi) -> None:
    """Floor re-checks handed over at the same moment share one read of live stock; each answer is its
    own transfer's (the large one breaches the floor, the small one does not, an unknown SKU is named)."""
    sold = [{"event_id": "pos-1", "type": "sale", "sku": "TV-003", "location": "dc-manchester", "qty": 5}]
    assert (await wf.client.as_("stock").post("/v1/stock/events", json=sold)).status_code == 200
    at = START + timedelta(minutes=1)
    large, small, unknown = await asyncio.gather(
        wf.workflow._floors.breach("TV-003", "dc-manchester", 8, at),
        wf.workflow._floors.breach("TV-003", "dc-manchester", 2, at),
        wf.workflow._floors.breach("NOPE-1", "dc-manchester", 1, at),
    )
    assert large["reason"].startswith("moving 8 would leave -3 available at dc-manchester")
    assert (large["available"], large["qty"]) == (5, 8)
    assert small is None
    assert unknown == {"reason": "sku NOPE-1 is no longer known"}
