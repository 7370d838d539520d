"""The shapes of master data and stock snapshot rows as the API accepts them (`PUT /v1/locations`,
`/v1/items`, `/v1/promotions`, `/v1/stock`), shared by the handlers and by the simulator's file inputs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from service.db.base import INTEGER_MAX, INTEGER_MIN
from service.stock.ledger import MAX_QTY

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:\-]+$")]
NonNegative = Annotated[int, msgspec.Meta(ge=0, le=INTEGER_MAX)]  # stored in INTEGER columns
Money = Annotated[float, msgspec.Meta(ge=0)]
Capability = Literal["ship_from_store", "pickup", "ship", "receive_transfers"]
LocationType = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[a-z_]+$")]


class LocationIn(msgspec.Struct, forbid_unknown_fields=True):
    id: Id
    type: LocationType
    region: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    capabilities: list[Capability] = []
    daily_capacity: NonNegative | None = None
    priority: Annotated[int, msgspec.Meta(ge=INTEGER_MIN, le=INTEGER_MAX)] = 0


class ItemIn(msgspec.Struct, forbid_unknown_fields=True):
    sku: Id
    category: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    price: Money
    cost: Money
    case_pack: Annotated[int, msgspec.Meta(ge=1, le=INTEGER_MAX)] = 1
    supplier: Annotated[str, msgspec.Meta(max_length=64)] | None = None  # a VARCHAR(64) column
    lead_time_days: NonNegative = 7
    season_end: (
        Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}$", description="a real date, YYYY-MM-DD")]
        | None
    ) = None


class PromotionIn(msgspec.Struct, forbid_unknown_fields=True):
    id: Id
    skus: Annotated[list[Id], msgspec.Meta(min_length=1)]
    start: Annotated[datetime, msgspec.Meta(tz=True)]
    end: Annotated[datetime, msgspec.Meta(tz=True)]
    uplift: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    locations: list[Id] = []
    channels: list[Id] = []
    per_order_cap: Annotated[int, msgspec.Meta(ge=1, le=INTEGER_MAX)] | None = None


Qty = Annotated[int, msgspec.Meta(ge=0, le=MAX_QTY)]


class SnapshotRowIn(msgspec.Struct, forbid_unknown_fields=True):
    sku: Id
    location: Id
    sellable: Qty
    damaged: Qty = 0
    return_pending: Qty = 0
    in_transit: Qty = 0
