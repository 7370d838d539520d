"""Daily capacity under concurrent allocation across worker processes: 150 orders race for 60 units of the
day's dispatch capacity (3 DCs of 20) while stock is plentiful. No location ever dispatches beyond its
capacity, and the capacity no order got stays available: orders sent one at a time afterwards take
exactly what the race left, so the day ends with exactly 60 units reserved."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.stock_server import BACKENDS, Served, backend_env, served

DCS = {"dc-a": (53.48, -2.24), "dc-b": (52.49, -1.89), "dc-c": (51.51, -0.13)}
DAILY = 20
ORDERS = 150


def _order(i: int) -> dict[str, Any]:
    return {
        "order_id": f"o{i}",
        "channel": "ecommerce",
        "fulfillment": "ship",
        "destination": {"lat": 52.9, "lon": -1.5, "region": "north"},
        "lines": [{"sku": "HOT", "qty": 1}],
        "reserve": True,
        "idempotency_key": f"race-{i}",
    }


async def _race(server: Served) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(48)
    limits = httpx.Limits(max_connections=48, max_keepalive_connections=48)
    async with httpx.AsyncClient(
        base_url=server.base, headers=server.headers, limits=limits, timeout=60
    ) as client:

        async def one(i: int) -> dict[str, Any]:
            async with gate:
                response = await client.post("/v1/decisions/allocation?trace=none", json=_order(i))
            assert response.status_code == 200, response.text
            decision: dict[str, Any] = response.json()["decision"]
            return decision

        return await asyncio.gather(*(one(i) for i in range(ORDERS)))


async def _until_every_worker_knows_the_item(server: Served) -> None:
    """Master data reaches the other worker within its cache's lifetime (a few seconds): wait until a burst
    of orders that reserve nothing is answered by both workers alike."""
    probe = {**_order(-1), "reserve": False}
    probe.pop("idempotency_key")
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=server.base, headers=server.headers, timeout=10) as client:
        while True:
            answers = await asyncio.gather(
                *(client.post("/v1/decisions/allocation?trace=none", json=probe) for _ in range(16))
            )
            if all(a.status_code == 200 for a in answers):
                return
            assert time.monotonic() < deadline, answers[0].text
            await asyncio.sleep(0.5)


def _taken(decisions: list[dict[str, Any]]) -> Counter[str]:
    taken: Counter[str] = Counter()
    for decision in decisions:
        if decision["reservation"] is not None:
            for line in decision["reservation"]["lines"]:
                taken[line["location"]] += line["qty"]
    return taken


@pytest.mark.slow
@pytest.mark.parametrize("backend", [*BACKENDS, "redis-cluster"])
def test_racing_orders_never_take_more_than_the_days_capacity(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with served(backend_env(backend, request, tmp_path), tmp_path, workers=2) as server:
        put = {"headers": server.headers, "timeout": 10}
        locations = [
            {"id": loc, "type": "dc", "region": "north", "lat": lat, "lon": lon, "daily_capacity": DAILY}
            for loc, (lat, lon) in DCS.items()
        ]
        item = {
            "sku": "HOT",
            "category": "toys",
            "price": 10.0,
            "cost": 4.0,
            "case_pack": 1,
            "lead_time_days": 3,
        }
        assert httpx.put(f"{server.base}/v1/locations", json=locations, **put).status_code == 200  # type: ignore[arg-type]
        assert httpx.put(f"{server.base}/v1/items", json=[item], **put).status_code == 200  # type: ignore[arg-type]
        rows = [{"sku": "HOT", "location": loc, "sellable": 100} for loc in DCS]
        assert httpx.put(f"{server.base}/v1/stock", json=rows, **put).status_code == 200  # type: ignore[arg-type]

        asyncio.run(_until_every_worker_knows_the_item(server))
        raced = asyncio.run(_race(server))
        taken = _taken(raced)
        assert all(n <= DAILY for n in taken.values()), taken
        # what the race left (orders that lost every re-plan answer `unreserved`) is still there to take
        after: list[dict[str, Any]] = []
        for i in range(ORDERS, ORDERS + 3 * DAILY + 1):
            response = httpx.post(
                f"{server.base}/v1/decisions/allocation?trace=none",
                json=_order(i),
                headers=server.headers,
                timeout=10,
            )
            assert response.status_code == 200, response.text
            after.append(response.json()["decision"])
            if after[-1]["status"] == "unallocated":
                break
        stock = httpx.get(f"{server.base}/v1/stock/HOT", headers=server.headers, timeout=10).json()

    total = _taken(raced) + _taken(after)
    assert total == Counter(dict.fromkeys(DCS, DAILY))
    assert after[-1]["status"] == "unallocated"
    assert Counter(d["status"] for d in raced)["allocated"] + len(after) - 1 == 3 * DAILY
    assert {row["location"]: row["reserved"] for row in stock["locations"]} == dict.fromkeys(DCS, DAILY)
