"""A small retail network (DCs, stores, a dark store), items and stock, behind the real app with the
decision endpoints, for the decision API tests and the documentation examples."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from service.rules.trial import TrialWorker
from service.stock import Levels, SnapshotRow
from service.stock.sql import SqlStockStore
from tests.apiclient import ApiClient, api_client, make_settings

LOCATIONS: list[dict[str, Any]] = [
    {"id": "dc-manchester", "type": "dc", "region": "north", "lat": 53.4808, "lon": -2.2426, "priority": 1},
    {"id": "dc-london", "type": "dc", "region": "south", "lat": 51.5072, "lon": -0.1276, "priority": 1},
    {
        "id": "store-leeds",
        "type": "store",
        "region": "north",
        "lat": 53.7997,
        "lon": -1.5492,
        "capabilities": ["ship_from_store", "pickup"],
        "daily_capacity": 40,
        "priority": 2,
    },
    {
        "id": "store-york",
        "type": "store",
        "region": "north",
        "lat": 53.9590,
        "lon": -1.0815,
        "capabilities": ["pickup"],
        "priority": 2,
    },
    {
        "id": "dark-camden",
        "type": "dark_store",
        "region": "south",
        "lat": 51.5390,
        "lon": -0.1426,
        "capabilities": ["ship_from_store"],
        "priority": 3,
    },
]
ITEMS: list[dict[str, Any]] = [
    {
        "sku": "TEE-001",
        "category": "apparel",
        "price": 20.0,
        "cost": 8.0,
        "case_pack": 6,
        "lead_time_days": 5,
        "season_end": "2027-01-31",
    },
    {
        "sku": "MUG-002",
        "category": "homeware",
        "price": 12.0,
        "cost": 4.0,
        "case_pack": 12,
        "lead_time_days": 7,
    },
    {
        "sku": "TV-003",
        "category": "electronics",
        "price": 899.0,
        "cost": 600.0,
        "case_pack": 1,
        "lead_time_days": 10,
    },
]
STOCK: list[SnapshotRow] = [
    SnapshotRow("TEE-001", "dc-manchester", 30),
    SnapshotRow("TEE-001", "dc-london", 12),
    SnapshotRow("TEE-001", "store-leeds", 9),
    SnapshotRow("TEE-001", "store-york", 8, return_pending=2),
    SnapshotRow("TEE-001", "dark-camden", 5),
    SnapshotRow("MUG-002", "dc-manchester", 4, in_transit=12),
    SnapshotRow("MUG-002", "store-leeds", 6),
    SnapshotRow("TV-003", "dc-london", 14),
    SnapshotRow("TV-003", "store-leeds", 2),
]
NORTH = {"lat": 53.8008, "lon": -1.5491, "region": "north"}


class DecisionsApi:
    def __init__(self, client: ApiClient, url: str) -> None:
        self.client = client
        self.url = url

    async def post(self, path: str, body: Any, trace: str | None = None, role: str = "decide") -> Any:
        query = f"?trace={trace}" if trace else ""
        return await self.client.as_(role).post(f"/v1/decisions/{path}{query}", json=body)

    async def levels(self, skus: Sequence[str]) -> dict[str, dict[str, Levels]]:
        store = SqlStockStore(self.url)
        try:
            return await store.get_levels(skus)
        finally:
            await store.close()

    async def snapshot(self, rows: Sequence[SnapshotRow]) -> None:
        store = SqlStockStore(self.url)
        try:
            await store.put_snapshot(rows)
        finally:
            await store.close()

    async def capacity_used(self, day: str, locations: Sequence[str]) -> dict[str, int]:
        store = SqlStockStore(self.url)
        try:
            return await store.get_capacity_used(day, locations)
        finally:
            await store.close()

    def recorded(self) -> int:
        """Decisions the log has accepted so far (written or queued)."""
        log = self.client.services.decision_log
        return 0 if log is None else int(log.recorded)


@asynccontextmanager
async def decisions_api(database_url: str, trials: TrialWorker | None = None) -> AsyncIterator[DecisionsApi]:
    async with api_client(make_settings(database_url), trials) as client:
        for path, rows in (("/v1/locations", LOCATIONS), ("/v1/items", ITEMS)):
            response = await client.as_("stock").put(path, json=rows)
            assert response.status_code == 200, response.text
        api = DecisionsApi(client, database_url)
        await api.snapshot(STOCK)
        yield api
