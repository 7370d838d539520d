"""Stock ledger and reservations: the `StockStore` protocol, its backends and the tools around it.

Public interface (import from `service.stock`):
- values (msgspec Structs, frozen): Levels (sellable, reserved, damaged, return_pending, in_transit;
  `.available` = max(0, sellable - reserved)), SnapshotRow, StockEvent, EventResult, StockException,
  ReservationLine (sku, location, qty, floor=0: the available stock that must remain after the take),
  ReservationRequest (order_id, channel, idempotency_key, lines, ttl_seconds, allow_partial=False,
  capacity=None: a CapacityClaim (day, limits: CapacityLimit(location, limit)) counting the units against
  the listed locations' daily capacity),
  ReservationResult (reservation | None, short, replayed; `.granted`), Reservation, ReservedLine, ShortLine.
- errors: StockError > StockUnavailable (.retry_after; its subclass StockStateLost: Redis lost the stock
  state and the store is rebuilding it), IdempotencyConflict, ReservationNotFound, ReservationStateError
  (.status), InvalidStockInput (.field, .reason).
- `StockStore` protocol: get_levels(skus) -> {sku: {location: Levels}}, get_available(skus) ->
  {sku: {location: units}}, get_capacity_used(day, locations) -> {location: units}, put_snapshot(rows) -> int,
  apply_events(events) -> list[EventResult], reserve(request) -> ReservationResult,
  get_reservation(id) -> Reservation | None, commit(id), release(id), sweep_expired(now=None) -> int,
  list_exceptions(limit=100), ping() (raises StockUnavailable or StockStateLost: the readiness probe),
  close().
- backends: MemoryStockStore(clock=...), SqlStockStore(url, pool_size, clock), RedisStockStore.open(redis_url,
  journal_url, pool_size=..., clock=...), and open_recovering(the same): a Redis store that rebuilds itself
  from the journal whenever its state marker is missing (`service.stock.recovery.StockRecovery`); `await
  open_store(settings)` picks one from the settings.
- demand: `StockStore.demand`, on every backend (`service.stock.demand.LedgerDemand`): `await
  store.demand.rates(pairs) -> {(sku, location): units per day}`, the exponentially weighted rate kept
  from applied sales (half-life `HALF_LIFE_DAYS`), decayed to now; pairs that never sold are absent.
- tools: start_sweeper(store, interval_seconds) -> asyncio.Task; rebuild_redis(store) -> RebuildReport (a
  rebuild on demand, under the rebuild lock, as `retail-policy stock rebuild` runs it). The journal's old
  days are folded into its checkpoint by the partition maintenance (`service.stock.checkpoint`, run by
  `service.db.partitions`), and the rebuild starts from it.
"""

from service.stock.backends import open_store
from service.stock.demand import HALF_LIFE_DAYS, LedgerDemand
from service.stock.memory import MemoryStockStore
from service.stock.rebuild import RebuildReport
from service.stock.recovery import open_recovering, rebuild_redis
from service.stock.redis import RedisStockStore
from service.stock.sql import SqlStockStore
from service.stock.store import (
    CapacityClaim,
    CapacityLimit,
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
    StockStateLost,
    StockStore,
    StockUnavailable,
)
from service.stock.sweeper import start_sweeper

__all__ = [
    "HALF_LIFE_DAYS",
    "CapacityClaim",
    "CapacityLimit",
    "EventResult",
    "IdempotencyConflict",
    "InvalidStockInput",
    "LedgerDemand",
    "Levels",
    "MemoryStockStore",
    "RebuildReport",
    "RedisStockStore",
    "Reservation",
    "ReservationLine",
    "ReservationNotFound",
    "ReservationRequest",
    "ReservationResult",
    "ReservationStateError",
    "ReservedLine",
    "ShortLine",
    "SnapshotRow",
    "SqlStockStore",
    "StockError",
    "StockEvent",
    "StockException",
    "StockStateLost",
    "StockStore",
    "StockUnavailable",
    "open_recovering",
    "open_store",
    "rebuild_redis",
    "start_sweeper",
]
