"""Oversell-proof through HTTP: 600 concurrent one-unit requests for 100 units grant exactly 100,
with the service running as 2 worker processes, on SQLite, PostgreSQL, Redis and a Redis Cluster."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.stock_server import BACKENDS, Served, backend_env, served

UNITS = {"S1": 34, "S2": 33, "S3": 33}
REQUESTS = 600


async def _storm(server: Served) -> Counter[int]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    gate = asyncio.Semaphore(64)
    locations = sorted(UNITS)
    async with httpx.AsyncClient(
        base_url=server.base, headers=server.headers, limits=limits, timeout=60
    ) as client:

        async def one(i: int) -> int:
            body = {
                "order_id": f"o{i}",
                "channel": "web",
                "idempotency_key": f"storm-{i}",
                "lines": [{"sku": "HOT", "location": locations[i % 3], "qty": 1}],
                "ttl_seconds": 600,
            }
            async with gate:
                return (await client.post("/v1/reservations", json=body)).status_code

        return Counter(await asyncio.gather(*(one(i) for i in range(REQUESTS))))


@pytest.mark.slow
@pytest.mark.parametrize("backend", [*BACKENDS, "redis-cluster"])
def test_600_concurrent_requests_for_100_units_grant_exactly_100(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with served(backend_env(backend, request, tmp_path), tmp_path, workers=2) as server:
        rows = [{"sku": "HOT", "location": loc, "sellable": qty} for loc, qty in UNITS.items()]
        assert (
            httpx.put(f"{server.base}/v1/stock", json=rows, headers=server.headers, timeout=10).status_code
            == 200
        )
        statuses = asyncio.run(_storm(server))
        stock = httpx.get(f"{server.base}/v1/stock/HOT", headers=server.headers, timeout=10).json()
    assert statuses == Counter({201: 100, 409: REQUESTS - 100})
    assert {row["location"]: row["reserved"] for row in stock["locations"]} == UNITS
    assert stock["totals"]["available"] == 0
