"""Stock and reservation endpoints: snapshots, events, levels, anomalies, reserve/commit/release.

Thin controllers: decode with msgspec, call the `StockStore` on `services.stock`, encode the answer.
Store errors become problem+json: bad input 422 naming the field, short stock and reused idempotency
keys 409, unknown reservations 404, an unreachable backend 503 with Retry-After.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import msgspec
from litestar import Request, Response, Router, get, post, put
from litestar.di import NamedDependency
from litestar.openapi.spec import Example
from litestar.params import FromPath, Parameter

from service.api.encoded import JsonAnswer
from service.api.inputs import Id, Qty, SnapshotRowIn
from service.api.openapi import answers, example, links
from service.errors import Conflict, FieldError, Invalid, NotFound
from service.security import requires
from service.services import Services
from service.stock.ledger import MAX_QTY, MAX_TTL_SECONDS, validate_day
from service.stock.store import (
    EventResult,
    InvalidStockInput,
    Levels,
    Reservation,
    ReservationLine,
    ReservationRequest,
    ShortLine,
    SnapshotRow,
    StockEvent,
    StockException,
    StockStore,
)

log = logging.getLogger(__name__)
PositiveQty = Annotated[int, msgspec.Meta(ge=1, le=MAX_QTY)]
MAX_EVENTS = 5000
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class EventIn(msgspec.Struct, forbid_unknown_fields=True):
    """One stock movement; `qty` is at least 1, except that an adjustment (a count) may be 0."""

    event_id: Id
    type: Literal[
        "receipt",
        "sale",
        "return",
        "return_disposition",
        "damage",
        "adjustment",
        "transfer_out",
        "transfer_in",
    ]
    sku: Id
    location: Id
    qty: Qty
    at: datetime | None = None
    disposition: Literal["restock", "damage"] | None = None
    to_location: Id | None = None
    reference: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    # a transfer_out's promised arrival at `to_location`: past it, units not booked in open delayed_receipt
    expected_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None


# What `ledger.validate_events` accepts: a count (adjustment) may be 0, every other movement at least 1.
EventsIn = list[
    Annotated[
        EventIn,
        msgspec.Meta(
            extra_json_schema={
                "if": {"properties": {"type": {"const": "adjustment"}}},
                "else": {"properties": {"qty": {"minimum": 1}}},
            }
        ),
    ]
]


class LineIn(msgspec.Struct, forbid_unknown_fields=True):
    sku: Id
    location: Id
    qty: PositiveQty
    floor: Qty = 0


class ReservationIn(msgspec.Struct, forbid_unknown_fields=True):
    order_id: Id
    channel: Id
    idempotency_key: Key
    lines: Annotated[list[LineIn], msgspec.Meta(min_length=1, max_length=200)]
    ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=MAX_TTL_SECONDS)] | None = None
    allow_partial: bool = False


class Written(msgspec.Struct):
    written: int


class EventsOut(msgspec.Struct):
    applied: int
    duplicates: int
    results: list[EventResult]


class LocationLevels(msgspec.Struct):
    location: str
    sellable: int
    reserved: int
    available: int
    damaged: int
    return_pending: int
    in_transit: int


class Totals(msgspec.Struct):
    sellable: int
    reserved: int
    available: int
    damaged: int
    return_pending: int
    in_transit: int


class StockOut(msgspec.Struct):
    sku: str
    locations: list[LocationLevels]
    totals: Totals


class AnomaliesOut(msgspec.Struct):
    anomalies: list[StockException]


class ReservationOut(msgspec.Struct):
    id: str
    order_id: str
    channel: str
    idempotency_key: str
    status: str
    lines: list[dict[str, Any]]
    expires_at: datetime
    created_at: datetime
    short: list[ShortLine] = []


def _store(services: Services) -> StockStore:
    return services.stock


def _out(reservation: Reservation, short: tuple[ShortLine, ...] = ()) -> ReservationOut:
    return ReservationOut(
        id=reservation.id,
        order_id=reservation.order_id,
        channel=reservation.channel,
        idempotency_key=reservation.idempotency_key,
        status=reservation.status,
        lines=[{"sku": line.sku, "location": line.location, "qty": line.qty} for line in reservation.lines],
        expires_at=reservation.expires_at,
        created_at=reservation.created_at,
        short=list(short),
    )


def stock_levels(sku: str, levels: dict[str, Levels]) -> StockOut:
    """Per location every bucket; totals clamp each location's available at 0 so none hides another's."""
    rows = [
        LocationLevels(
            loc, lv.sellable, lv.reserved, lv.available, lv.damaged, lv.return_pending, lv.in_transit
        )
        for loc, lv in sorted(levels.items())
    ]
    totals = Totals(
        sellable=sum(r.sellable for r in rows),
        reserved=sum(r.reserved for r in rows),
        available=sum(r.available for r in rows),
        damaged=sum(r.damaged for r in rows),
        return_pending=sum(r.return_pending for r in rows),
        in_transit=sum(r.in_transit for r in rows),
    )
    return StockOut(sku, rows, totals)


@put("/stock", opt=requires("stock"), operation_id="putStockSnapshot", status_code=200)
async def put_stock(
    services: NamedDependency[Services],
    data: Annotated[
        list[SnapshotRowIn],
        example(
            [
                {"sku": "SKU-GUIDE", "location": "STORE-MAN-01", "sellable": 3},
                {"sku": "SKU-GUIDE", "location": "DC-NORTH", "sellable": 40, "in_transit": 12},
            ]
        ),
    ],
) -> Written:
    seen: set[tuple[str, str]] = set()
    for index, row in enumerate(data):
        if (row.sku, row.location) in seen:
            raise Invalid(
                "duplicate rows in one snapshot",
                [FieldError(f"[{index}]", f"{row.sku} at {row.location} appears twice")],
            )
        seen.add((row.sku, row.location))
    rows = [
        SnapshotRow(r.sku, r.location, r.sellable, r.damaged, r.return_pending, r.in_transit) for r in data
    ]
    return Written(await _store(services).put_snapshot(rows))


@post("/stock/events", opt=requires("stock"), operation_id="postStockEvents", status_code=200)
async def post_events(
    services: NamedDependency[Services],
    data: Annotated[
        EventsIn,
        example(
            [
                {
                    "event_id": "POS-88-0001",
                    "type": "sale",
                    "sku": "SKU-GUIDE",
                    "location": "STORE-MAN-01",
                    "qty": 1,
                },
                {
                    "event_id": "RCV-DC-0042",
                    "type": "receipt",
                    "sku": "SKU-GUIDE",
                    "location": "DC-NORTH",
                    "qty": 12,
                },
            ]
        ),
    ],
) -> EventsOut:
    if len(data) > MAX_EVENTS:
        raise Invalid(
            "too many events", [FieldError("body", f"send at most {MAX_EVENTS} events per request")]
        )
    expected: dict[str, datetime] = {}
    for index, e in enumerate(data):
        if e.expected_at is not None:
            if e.type != "transfer_out" or e.to_location is None:
                reason = "only a transfer_out with to_location has an expected arrival"
                raise Invalid(
                    f"[{index}].expected_at: {reason}", [FieldError(f"[{index}].expected_at", reason)]
                )
            expected[e.event_id] = e.expected_at
    events = [
        StockEvent(
            e.event_id, e.type, e.sku, e.location, e.qty, e.at, e.disposition, e.to_location, e.reference
        )
        for e in data
    ]
    await services.workflow.before_receipts(events)
    results = await _store(services).apply_events(events)
    # a receipt naming a transfer's shipment closes its case
    await services.workflow.receive(events, [r.status for r in results])
    try:
        await services.monitor.after_stock_events(events, results, expected)
    except Exception:  # the stock moved; the periodic exception check catches up
        log.exception("checking exceptions after stock events failed")
    applied = sum(r.status == "applied" for r in results)
    return EventsOut(applied, len(results) - applied, results)


@get("/stock/{sku:str}", opt=requires("stock", "decide", "planner"), operation_id="getStock")
async def get_stock(services: NamedDependency[Services], sku: FromPath[str]) -> StockOut:
    levels = (await _store(services).get_levels([sku])).get(sku, {})
    if not levels:
        raise NotFound(f"no stock recorded for sku {sku!r}", [FieldError("sku", "unknown")])
    return stock_levels(sku, levels)


class CapacityRow(msgspec.Struct):
    location: str
    daily_capacity: int
    used: int
    remaining: int


class CapacityOut(msgspec.Struct):
    day: str
    locations: list[CapacityRow]


@get("/capacity", opt={**requires("stock", "decide", "planner"), **answers(404)}, operation_id="getCapacity")
async def get_capacity(
    services: NamedDependency[Services],
    day: Annotated[
        str | None,
        Parameter(
            description="business day, YYYY-MM-DD (a real date); default today",
            pattern=r"^\d{4}-\d{2}-\d{2}$",
            examples=[Example(summary="a business day", value="2026-11-27")],
        ),
    ] = None,
    location: Annotated[str | None, Parameter(description="one location only")] = None,
) -> CapacityOut:
    """Today's (or `day`'s) daily capacity of every location that has one: what reservations counted
    against it (held and committed) and what remains, in the `CAPACITY_TIMEZONE` calendar."""
    zone = ZoneInfo(services.settings.stock.capacity_timezone)
    wanted = day or datetime.now(zone).date().isoformat()
    try:
        validate_day(wanted, "query.day")
    except InvalidStockInput as error:
        raise Invalid(f"{error.field}: {error.reason}", [FieldError(error.field, error.reason)]) from None
    master = await services.master_data.get()
    capped = {
        loc.id: loc.daily_capacity
        for loc in master.locations.values()
        if loc.daily_capacity is not None and (location is None or loc.id == location)
    }
    if location is not None and not capped:
        reason = "unknown location" if location not in master.locations else "has no daily capacity"
        raise NotFound(f"location {location!r}: {reason}", [FieldError("location", reason)])
    used = await _store(services).get_capacity_used(wanted, sorted(capped)) if capped else {}
    return CapacityOut(
        wanted,
        [
            CapacityRow(loc, daily, used.get(loc, 0), max(0, daily - used.get(loc, 0)))
            for loc, daily in sorted(capped.items())
        ],
    )


@get("/stock-anomalies", opt=requires("stock", "planner"), operation_id="listStockAnomalies")
async def list_anomalies(
    services: NamedDependency[Services], limit: Annotated[int, Parameter(ge=1, le=1000)] = 100
) -> AnomaliesOut:
    """What applying events recorded, newest first: negative inventory after a POS sale, a return without
    a pending return, a count below the reserved units. `/v1/exceptions` holds the records people own."""
    return AnomaliesOut(await _store(services).list_exceptions(limit))


@post(
    "/reservations",
    opt={
        **requires("decide"),
        **answers(409),
        **links(
            getReservation={"reservation_id": "$response.body#/id"},
            commitReservation={"reservation_id": "$response.body#/id"},
            releaseReservation={"reservation_id": "$response.body#/id"},
        ),
    },
    operation_id="createReservation",
    status_code=201,
)
async def create_reservation(
    request: Request[Any, Any, Any],
    data: Annotated[
        ReservationIn,
        example(
            {
                "order_id": "WEB-1001",
                "channel": "ecommerce",
                "idempotency_key": "WEB-1001-a",
                "lines": [{"sku": "SKU-GUIDE", "location": "DC-NORTH", "qty": 5}],
                "ttl_seconds": 900,
            }
        ),
    ],
) -> Response[ReservationOut]:
    # the hot path skips dependency resolution; by key: by attribute the state fails a lookup first
    services: Services = request.app.state["services"]
    ttl = data.ttl_seconds or services.settings.stock.default_ttl_seconds
    lines = tuple(ReservationLine(line.sku, line.location, line.qty, line.floor) for line in data.lines)
    wanted = ReservationRequest(
        data.order_id, data.channel, data.idempotency_key, lines, ttl, data.allow_partial
    )
    result = await _store(services).reserve(wanted)
    if result.reservation is None:
        raise Conflict(
            "not enough stock for every line; nothing was reserved",
            [_short_error(short, data.lines) for short in result.short],
            title="Insufficient stock",
        )
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return JsonAnswer(_out(result.reservation, result.short), status_code=201, headers=headers)


def _short_error(short: ShortLine, lines: list[LineIn]) -> FieldError:
    indexes = [i for i, line in enumerate(lines) if (line.sku, line.location) == (short.sku, short.location)]
    where = f"lines[{indexes[0]}]" if len(indexes) == 1 else "lines[" + ",".join(map(str, indexes)) + "]"
    return FieldError(
        where,
        f"{short.requested} requested of {short.sku} at {short.location}, {short.available} available",
        {
            "sku": short.sku,
            "location": short.location,
            "requested": short.requested,
            "available": short.available,
        },
    )


@get("/reservations/{reservation_id:str}", opt=requires("decide"), operation_id="getReservation")
async def get_reservation(
    services: NamedDependency[Services], reservation_id: FromPath[str]
) -> ReservationOut:
    found = await _store(services).get_reservation(reservation_id)
    if found is None:
        raise NotFound(f"no reservation {reservation_id!r}", [FieldError("id", "unknown")])
    return _out(found)


@post(
    "/reservations/{reservation_id:str}/commit",
    opt={**requires("decide"), **answers(409)},
    operation_id="commitReservation",
    status_code=200,
)
async def commit_reservation(
    services: NamedDependency[Services], reservation_id: FromPath[str]
) -> ReservationOut:
    return _out(await _store(services).commit(reservation_id))


@post(
    "/reservations/{reservation_id:str}/release",
    opt={**requires("decide"), **answers(409)},
    operation_id="releaseReservation",
    status_code=200,
)
async def release_reservation(
    services: NamedDependency[Services], reservation_id: FromPath[str]
) -> ReservationOut:
    return _out(await _store(services).release(reservation_id))


router = Router(
    path="/v1",
    route_handlers=[
        put_stock,
        post_events,
        get_stock,
        get_capacity,
        list_anomalies,
        create_reservation,
        get_reservation,
        commit_reservation,
        release_reservation,
    ],
    tags=["stock"],
)
