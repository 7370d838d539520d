"""Stock ledger and reservations: the `StockStore` protocol, its backends and the tools around it.

Public interface (import from `service.stock`):
- values: Levels (sellable, reserved, damaged, return_pending, in_transit; `.available`), SnapshotRow,
  StockEvent, EventResult, StockException, ReservationLine (sku, location, qty, floor=0),
  ReservationRequest (order_id, channel, idempotency_key, lines, ttl_seconds, allow_partial),
  ReservationResult (reservation | None, short lines, replayed; `.granted`), Reservation, ReservedLine, ShortLine.
- errors: StockError > StockUnavailable (retry_after), IdempotencyConflict, ReservationNotFound,
  ReservationStateError, InvalidStockInput (field, reason).
- `StockStore` protocol: get_levels(skus) -> {sku: {location: Levels}}, put_snapshot(rows), apply_events(events),
  reserve(request), get_reservation(id), commit(id), release(id), sweep_expired(now=None),
  list_exceptions(limit), close().
- backends: MemoryStockStore(clock=...).
"""

from service.stock.memory import MemoryStockStore
from service.stock.store import (
    EventResult,
    IdempotencyConflict,
    InvalidStockInput,
    Levels,
    Reservation,
    ReservationLine,
    ReservationNotFound,
    ReservationRequest,
    ReservationResult,
    ReservationStateError,
    ReservedLine,
    ShortLine,
    SnapshotRow,
    StockError,
    StockEvent,
    StockException,
    StockStore,
    StockUnavailable,
)

__all__ = [
    "EventResult",
    "IdempotencyConflict",
    "InvalidStockInput",
    "Levels",
    "MemoryStockStore",
    "Reservation",
    "ReservationLine",
    "ReservationNotFound",
    "ReservationRequest",
    "ReservationResult",
    "ReservationStateError",
    "ReservedLine",
    "ShortLine",
    "SnapshotRow",
    "StockError",
    "StockEvent",
    "StockException",
    "StockStore",
    "StockUnavailable",
]
