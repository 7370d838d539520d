"""Master data endpoints: locations, items and promotions (replace-by-id upserts, and listings)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, put
from litestar.di import NamedDependency
from litestar.params import JSONBody

from service.api.inputs import (
    ItemIn,
    LocationIn,
    PromotionIn,
)
from service.api.openapi import example
from service.db.models import Item, Location, Promotion
from service.errors import FieldError, Invalid
from service.masterdata import upsert
from service.security import principal_of, requires
from service.security.audit import audit
from service.services import Services


class Upserted(msgspec.Struct):
    upserted: int


def _real_date(value: str | None) -> bool:
    if value is None:
        return True
    try:
        return date.fromisoformat(value).isoformat() == value
    except ValueError:
        return False


def _unique(ids: list[str], field: str) -> None:
    seen: set[str] = set()
    for index, value in enumerate(ids):
        if value in seen:
            raise Invalid(
                "duplicate ids in one request", [FieldError(f"[{index}].{field}", f"'{value}' appears twice")]
            )
        seen.add(value)


ITEMS = example(
    [
        {
            "sku": "SKU-GUIDE",
            "category": "apparel",
            "price": 25.0,
            "cost": 9.0,
            "case_pack": 6,
            "lead_time_days": 10,
            "season_end": "2027-01-31",
        }
    ]
)


@put("/locations", opt=requires("stock"), operation_id="putLocations", status_code=200)
async def put_locations(
    services: NamedDependency[Services], request: Request[Any, Any, Any], data: JSONBody[list[LocationIn]]
) -> Upserted:
    _unique([loc.id for loc in data], "id")
    rows = [msgspec.structs.asdict(loc) for loc in data]
    async with services.sessions.begin() as session:
        await upsert(session, Location, rows, "id")
        await audit(session, principal_of(request).name, "locations.put", "locations", {"count": len(rows)})
    services.master_data.invalidate()
    return Upserted(len(rows))


@put("/items", opt=requires("stock"), operation_id="putItems", status_code=200)
async def put_items(
    services: NamedDependency[Services], request: Request[Any, Any, Any], data: Annotated[list[ItemIn], ITEMS]
) -> Upserted:
    _unique([item.sku for item in data], "sku")
    for index, item in enumerate(data):
        if item.cost > item.price * 10 and item.price > 0:
            raise Invalid(
                "implausible cost", [FieldError(f"[{index}].cost", "cost is more than ten times the price")]
            )
        if not _real_date(item.season_end):
            # a stored impossible date would fail every later markdown decision for the sku
            reason = f"{item.season_end!r} is not a calendar date (YYYY-MM-DD)"
            raise Invalid(f"[{index}].season_end: {reason}", [FieldError(f"[{index}].season_end", reason)])
    rows = [msgspec.structs.asdict(item) for item in data]
    async with services.sessions.begin() as session:
        await upsert(session, Item, rows, "sku")
        await audit(session, principal_of(request).name, "items.put", "items", {"count": len(rows)})
    services.master_data.invalidate()
    return Upserted(len(rows))


@put("/promotions", opt=requires("stock"), operation_id="putPromotions", status_code=200)
async def put_promotions(
    services: NamedDependency[Services], request: Request[Any, Any, Any], data: JSONBody[list[PromotionIn]]
) -> Upserted:
    _unique([promo.id for promo in data], "id")
    for index, promo in enumerate(data):
        if promo.end <= promo.start:
            raise Invalid("empty promotion window", [FieldError(f"[{index}].end", "end must be after start")])
    rows = [msgspec.structs.asdict(promo) for promo in data]
    async with services.sessions.begin() as session:
        await upsert(session, Promotion, rows, "id")
        await audit(session, principal_of(request).name, "promotions.put", "promotions", {"count": len(rows)})
    services.master_data.invalidate()
    return Upserted(len(rows))


@get("/locations", opt=requires("stock", "decide", "planner"), operation_id="listLocations")
async def list_locations(services: NamedDependency[Services]) -> list[LocationIn]:
    data = await services.master_data.get()
    return [
        LocationIn(r.id, r.type, r.region, r.lat, r.lon, list(r.capabilities), r.daily_capacity, r.priority)  # type: ignore[arg-type]
        for r in sorted(data.locations.values(), key=lambda r: r.id)
    ]


@get("/items", opt=requires("stock", "decide", "planner"), operation_id="listItems")
async def list_items(services: NamedDependency[Services]) -> list[ItemIn]:
    data = await services.master_data.get()
    return [
        ItemIn(r.sku, r.category, r.price, r.cost, r.case_pack, r.supplier, r.lead_time_days, r.season_end)
        for r in sorted(data.items.values(), key=lambda r: r.sku)
    ]


@get("/promotions", opt=requires("stock", "decide", "planner"), operation_id="listPromotions")
async def list_promotions(services: NamedDependency[Services]) -> list[PromotionIn]:
    data = await services.master_data.get()
    return [
        PromotionIn(
            p.id, list(p.skus), p.start, p.end, p.uplift, list(p.locations), list(p.channels), p.per_order_cap
        )
        for p in data.promotions
    ]


router = Router(
    path="/v1",
    route_handlers=[put_locations, put_items, put_promotions, list_locations, list_items, list_promotions],
    tags=["master data"],
)
