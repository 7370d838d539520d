"""A small demo network (four stores, one DC, six SKUs) so that a first request returns something real."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from service.db.engine import create_engine, session_factory
from service.db.models import ApiKey, Item, Location, Promotion
from service.masterdata import upsert
from service.security.keys import create_key
from service.settings import VAR_DIR, get_settings

LOCATIONS: list[dict[str, Any]] = [
    {
        "id": "DC-NORTH",
        "type": "dc",
        "region": "north",
        "lat": 53.48,
        "lon": -2.24,
        "capabilities": ["ship", "receive_transfers"],
        "daily_capacity": 5000,
        "priority": 10,
    },
    {
        "id": "STORE-MAN-01",
        "type": "store",
        "region": "north",
        "lat": 53.47,
        "lon": -2.25,
        "capabilities": ["ship_from_store", "pickup", "receive_transfers"],
        "daily_capacity": 60,
        "priority": 5,
    },
    {
        "id": "STORE-LDS-01",
        "type": "store",
        "region": "north",
        "lat": 53.80,
        "lon": -1.55,
        "capabilities": ["pickup", "receive_transfers"],
        "daily_capacity": 40,
        "priority": 5,
    },
    {
        "id": "STORE-LON-01",
        "type": "store",
        "region": "south",
        "lat": 51.51,
        "lon": -0.13,
        "capabilities": ["ship_from_store", "pickup", "receive_transfers"],
        "daily_capacity": 80,
        "priority": 5,
    },
    {
        "id": "STORE-BRI-01",
        "type": "store",
        "region": "south",
        "lat": 51.45,
        "lon": -2.59,
        "capabilities": ["pickup", "receive_transfers"],
        "daily_capacity": 40,
        "priority": 5,
    },
]
ITEMS: list[dict[str, Any]] = [
    {
        "sku": "SKU-TEE-M",
        "category": "apparel",
        "price": 18.0,
        "cost": 6.5,
        "case_pack": 12,
        "supplier": "acme",
        "lead_time_days": 10,
        "season_end": None,
    },
    {
        "sku": "SKU-TEE-L",
        "category": "apparel",
        "price": 18.0,
        "cost": 6.5,
        "case_pack": 12,
        "supplier": "acme",
        "lead_time_days": 10,
        "season_end": None,
    },
    {
        "sku": "SKU-JKT-M",
        "category": "outerwear",
        "price": 120.0,
        "cost": 48.0,
        "case_pack": 4,
        "supplier": "north",
        "lead_time_days": 21,
        "season_end": "2027-02-28",
    },
    {
        "sku": "SKU-MUG",
        "category": "home",
        "price": 9.5,
        "cost": 2.1,
        "case_pack": 24,
        "supplier": "clay",
        "lead_time_days": 7,
        "season_end": None,
    },
    {
        "sku": "SKU-HDP-01",
        "category": "electronics",
        "price": 79.0,
        "cost": 41.0,
        "case_pack": 6,
        "supplier": "sono",
        "lead_time_days": 14,
        "season_end": None,
    },
    {
        "sku": "SKU-LAMP",
        "category": "home",
        "price": 45.0,
        "cost": 17.0,
        "case_pack": 2,
        "supplier": "lumo",
        "lead_time_days": 12,
        "season_end": None,
    },
]
# sellable units per location for every SKU (the DC holds the depth, stores a shelf's worth)
STOCK = {"DC-NORTH": 400, "STORE-MAN-01": 14, "STORE-LDS-01": 6, "STORE-LON-01": 20, "STORE-BRI-01": 3}


def demo_stock_rows() -> list[dict[str, Any]]:
    return [
        {
            "sku": item["sku"],
            "location": location,
            "sellable": qty,
            "damaged": 0,
            "return_pending": 0,
            "in_transit": 24 if location == "STORE-LDS-01" else 0,
        }
        for item in ITEMS
        for location, qty in STOCK.items()
    ]


def demo_promotions(now: datetime) -> list[dict[str, Any]]:
    start = now.replace(minute=0, second=0, microsecond=0)
    return [
        {
            "id": "PROMO-HOME-WEEKEND",
            "skus": ["SKU-MUG", "SKU-LAMP"],
            "locations": [],
            "channels": [],
            "start": start,
            "end": start + timedelta(days=3),
            "uplift": 2.5,
            "per_order_cap": 4,
        }
    ]


ADMIN_KEY_FILE = VAR_DIR / "admin-key"


async def load_demo() -> str:
    """Load the demo network into an empty database; return the admin key (created once, kept in var/)."""
    settings = get_settings()
    engine = create_engine(settings.database)
    sessions = session_factory(engine)
    try:
        async with sessions.begin() as session:
            if not (await session.execute(select(func.count()).select_from(Location))).scalar_one():
                await upsert(session, Location, LOCATIONS, "id")
                await upsert(session, Item, ITEMS, "sku")
                await upsert(session, Promotion, demo_promotions(datetime.now(UTC)), "id")
        await _load_demo_stock(settings)
        key = ADMIN_KEY_FILE.read_text().strip() if ADMIN_KEY_FILE.exists() else ""
        async with sessions() as session:
            known = (
                key
                and (await session.execute(select(ApiKey.id).where(ApiKey.id == key.split("_")[1]))).first()
            )
        if not known:
            key = await create_key(sessions, "demo-admin", ["admin"])
            ADMIN_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
            ADMIN_KEY_FILE.write_text(key + "\n")
            os.chmod(ADMIN_KEY_FILE, 0o600)
        return key
    finally:
        await engine.dispose()


async def _load_demo_stock(settings: Any) -> None:
    try:
        from service.stock import SnapshotRow, open_store
    except ImportError:
        return
    store = await open_store(settings)
    try:
        levels = await store.get_levels([ITEMS[0]["sku"]])
        if not levels.get(ITEMS[0]["sku"]):
            await store.put_snapshot([SnapshotRow(**row) for row in demo_stock_rows()])
    finally:
        await store.close()
