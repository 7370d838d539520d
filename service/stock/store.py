"""The `StockStore` protocol and the plain values that cross it.

Every backend (memory, SQL, Redis) implements this one protocol and passes one contract suite
(tests/contract/test_stock_contract.py). Values are immutable msgspec Structs so that the API can
encode them directly and the decisions can hold them without copying.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal, NoReturn, Protocol, runtime_checkable

import msgspec

from service.stock.demand import LedgerDemand

EventType = Literal[
    "receipt",
    "sale",
    "return",
    "return_disposition",
    "damage",
    "adjustment",
    "transfer_out",
    "transfer_in",
]
EVENT_TYPES: tuple[str, ...] = (
    "receipt",
    "sale",
    "return",
    "return_disposition",
    "damage",
    "adjustment",
    "transfer_out",
    "transfer_in",
)
Disposition = Literal["restock", "damage"]
ReservationStatus = Literal["held", "committed", "released", "expired"]
BUCKETS: tuple[str, ...] = ("sellable", "reserved", "damaged", "return_pending", "in_transit")


class AvailableView(dict[str, int]):
    """location -> available units of one SKU as one stock answer gave them, when a store hands the same
    map to every call that reads the same answer (the Redis store's ready answers, while the SKU's stock
    is unchanged). Read only: what is computed from it alone and from other immutable values may be kept
    with it, in `derived` (its user keys and bounds what it keeps there)."""

    __slots__ = ("derived",)

    def __init__(self, units: dict[str, int]) -> None:
        super().__init__(units)
        self.derived: dict[Any, Any] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (AvailableView, (dict(self),))  # a copy (or a pickled one) is a fresh view: nothing derived

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a stock answer's map is read only")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only


class Levels(msgspec.Struct, frozen=True):
    """The buckets of one SKU at one location."""

    sellable: int = 0
    reserved: int = 0
    damaged: int = 0
    return_pending: int = 0
    in_transit: int = 0

    @property
    def available(self) -> int:
        """What a new reservation may still take; never below 0 (a POS sale can oversell a location)."""
        return max(0, self.sellable - self.reserved)


class SnapshotRow(msgspec.Struct, frozen=True):
    """A counted position: sets these buckets, leaves `reserved` as it is."""

    sku: str
    location: str
    sellable: int
    damaged: int = 0
    return_pending: int = 0
    in_transit: int = 0


class StockEvent(msgspec.Struct, frozen=True):
    """One movement of stock, applied exactly once per `event_id`.

    qty > 0 for every type except `adjustment`, where qty is the counted sellable quantity (>= 0).
    `return_disposition` needs `disposition`; `transfer_out` may name `to_location`, whose
    `in_transit` then grows by qty until the matching `transfer_in` arrives.
    """

    event_id: str
    type: EventType
    sku: str
    location: str
    qty: int
    at: datetime | None = None
    disposition: Disposition | None = None
    to_location: str | None = None
    reference: str | None = None


class StockException(msgspec.Struct, frozen=True):
    """An anomaly recorded while applying an event, such as negative inventory after a POS sale."""

    kind: str
    sku: str
    location: str
    event_id: str
    qty: int
    shortfall: int
    at: datetime
    id: int = 0


class EventResult(msgspec.Struct, frozen=True):
    event_id: str
    status: Literal["applied", "duplicate"]
    exception: StockException | None = None


class ReservationLine(msgspec.Struct, frozen=True):
    """One line to reserve; `floor` is the available stock that must remain after taking `qty`."""

    sku: str
    location: str
    qty: int
    floor: int = 0


class CapacityLimit(msgspec.Struct, frozen=True):
    """A location's dispatch limit for one day: the units all reservations counted on that day may take there."""

    location: str
    limit: int


class CapacityClaim(msgspec.Struct, frozen=True):
    """Count a reservation's units against the daily capacity of the listed locations on `day`.

    `day` is the business day (YYYY-MM-DD) the caller plans in. Units taken at a listed location count
    toward its usage for that day while the reservation is held, and for good once it is committed; a
    release or an expiry gives them back. Locations not listed are not counted or limited.
    """

    day: str
    limits: tuple[CapacityLimit, ...]


class ReservationRequest(msgspec.Struct, frozen=True):
    """`capacity` is the service's policy, not the caller's body: it is not part of what makes a retry with
    the same idempotency key "the same request" (a replay answers the reservation as first granted)."""

    order_id: str
    channel: str
    idempotency_key: str
    lines: tuple[ReservationLine, ...]
    ttl_seconds: int
    allow_partial: bool = False
    capacity: CapacityClaim | None = None


class ReservedLine(msgspec.Struct, frozen=True):
    sku: str
    location: str
    qty: int


class ShortLine(msgspec.Struct, frozen=True):
    """A line that could not be fully taken: `available` is what it could have taken above its floor and,
    for a reservation with a capacity claim, within its location's remaining capacity for the day."""

    sku: str
    location: str
    requested: int
    available: int


class Reservation(msgspec.Struct, frozen=True):
    id: str
    order_id: str
    channel: str
    idempotency_key: str
    lines: tuple[ReservedLine, ...]
    status: ReservationStatus
    expires_at: datetime
    created_at: datetime


class ReservationResult(msgspec.Struct, frozen=True):
    """`reservation` is set when anything was granted; `short` names every line not fully granted.

    `replayed` is true when the idempotency key had already been granted with the same body. `available`,
    on a refusal (nothing granted) from a store that can tell at no extra cost (Redis, on one slot): the
    request's SKUs as `get_available` would have read them in the same atomic step, so that a caller who
    planned on stock can plan again without reading it; None otherwise.
    """

    reservation: Reservation | None
    short: tuple[ShortLine, ...] = ()
    replayed: bool = False
    available: dict[str, dict[str, int]] | None = None

    @property
    def granted(self) -> bool:
        return self.reservation is not None


class StockError(Exception):
    """Base of the errors a store raises; the API maps each to a problem+json status."""


class StockUnavailable(StockError):
    """The backing service cannot be reached; nothing was changed. Retry after `retry_after` seconds."""

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class StockStateLost(StockUnavailable):
    """The backing service answers but has lost the stock state (the Redis marker is missing): the store is
    being rebuilt from the journal. Nothing was changed; retry after `retry_after` seconds."""

    def __init__(
        self, detail: str = "stock state lost: rebuilding from the journal", retry_after: int = 2
    ) -> None:
        super().__init__(detail, retry_after)


class IdempotencyConflict(StockError):
    """The idempotency key was already used with another request body."""


class ReservationNotFound(StockError):
    pass


class ReservationStateError(StockError):
    """The reservation is not in a state that allows this (commit after release or expiry, ...)."""

    def __init__(self, detail: str, status: str) -> None:
        super().__init__(detail)
        self.status = status


class InvalidStockInput(StockError):
    """A value the store cannot accept; `field` is its path (for example `lines[1].qty`)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@runtime_checkable
class StockStore(Protocol):
    """Stock levels, events and reservations; safe under any concurrency, across worker processes."""

    @property
    def demand(self) -> LedgerDemand:
        """The demand rates the ledger keeps from applied sales (`service.stock.demand`)."""
        ...

    async def get_levels(self, skus: Sequence[str]) -> dict[str, dict[str, Levels]]:
        """sku -> location -> Levels for every location that has a row; unknown SKUs map to {}."""

    async def get_available(self, skus: Sequence[str]) -> dict[str, dict[str, int]]:
        """sku -> location -> `Levels.available` for the same locations as `get_levels`: the one number
        the decisions read, without the other buckets. The per-SKU maps are read only: a store may hand
        the same map to later calls (the Redis store does while a SKU's stock is unchanged)."""

    async def get_capacity_used(self, day: str, locations: Sequence[str]) -> dict[str, int]:
        """location -> units counted against its capacity on `day` (held and committed reservations with a
        capacity claim for that day), for every location asked; 0 where nothing was counted."""

    async def put_snapshot(self, rows: Sequence[SnapshotRow]) -> int:
        """Set the counted buckets of each (sku, location); returns the number of rows written."""

    async def apply_events(self, events: Sequence[StockEvent]) -> list[EventResult]:
        """Apply each event atomically and at most once (by event_id), in order."""

    async def reserve(self, request: ReservationRequest) -> ReservationResult:
        """Take every line or none (unless `allow_partial`); raises IdempotencyConflict."""

    async def get_reservation(self, reservation_id: str) -> Reservation | None: ...

    async def commit(self, reservation_id: str) -> Reservation:
        """Fulfil a held reservation: sellable and reserved both fall. Idempotent once committed."""

    async def release(self, reservation_id: str) -> Reservation:
        """Give a held reservation's stock back. Idempotent once released or expired."""

    async def sweep_expired(self, now: datetime | None = None) -> int:
        """Release every held reservation whose expiry has passed; returns how many."""

    async def list_exceptions(self, limit: int = 100) -> list[StockException]:
        """Most recent first."""

    async def ping(self) -> None:
        """Raise StockUnavailable when the backing service cannot be reached (readiness probe)."""

    async def close(self) -> None: ...
