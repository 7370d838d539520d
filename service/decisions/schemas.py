"""The requests the five decisions accept, as msgspec Structs (decoded strictly; errors name the path)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

import msgspec

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Qty = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
Price = Annotated[float, msgspec.Meta(gt=0, le=10_000_000)]
Rate = Annotated[float, msgspec.Meta(ge=0, le=1_000_000)]
Fulfillment = Literal["ship", "pickup", "ship_from_store"]


class Struct(msgspec.Struct, forbid_unknown_fields=True):
    """Base: unknown fields are refused so a misspelt field never passes silently."""


class DestinationIn(Struct):
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    region: str = ""


class OrderLineIn(Struct):
    sku: Id
    qty: Qty


class CustomerIn(Struct):
    tier: Name = "standard"


class AllocationRequest(Struct):
    order_id: Id
    channel: Name
    fulfillment: Fulfillment
    lines: Annotated[list[OrderLineIn], msgspec.Meta(min_length=1, max_length=200)]
    destination: DestinationIn | None = None
    pickup_location: Id | None = None
    reserve: bool = False
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    customer: CustomerIn | None = None


class AvailabilityRequest(Struct):
    channel: Name
    skus: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=500)]
    destination: DestinationIn | None = None


class ReorderRequest(Struct):
    sku: Id
    location: Id
    daily_rate: Rate | None = None
    promo_upcoming: bool | None = None


class DemandRateIn(Struct):
    sku: Id
    location: Id
    daily_rate: Rate


class ReorderScanRequest(Struct):
    """Every sku-location with a stock row that matches all the given filters (an empty filter matches all)."""

    skus: Annotated[list[Id], msgspec.Meta(max_length=100_000)] = []
    locations: Annotated[list[Id], msgspec.Meta(max_length=10_000)] = []
    location_types: list[Name] = []
    categories: list[Name] = []
    daily_rates: Annotated[list[DemandRateIn], msgspec.Meta(max_length=200_000)] = []
    default_daily_rate: Rate | None = None
    include_all: bool = False


class RequesterIn(Struct):
    id: Id
    role: Name


class TransferRequest(Struct):
    transfer_id: Id
    sku: Id
    qty: Qty
    from_location: Id
    to_location: Id
    requested_by: RequesterIn
    reason: Annotated[str, msgspec.Meta(max_length=200)] = ""


class MarkdownRequest(Struct):
    markdown_id: Id
    sku: Id
    current_price: Price
    proposed_price: Price
    requested_by: RequesterIn
    effective_from: date
    locations: Annotated[list[Id], msgspec.Meta(max_length=10_000)] | None = None
    daily_rate: Rate | None = None
