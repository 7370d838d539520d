"""Master data (locations, items, promotions): plain records, validation, storage and a per-process cache.

Decisions read master data on every request, so each worker keeps an immutable snapshot. Every `ttl`
seconds it reads a change mark (one small query: each table's row count and latest `updated_at`, the price
changes' count and latest id; every writer sets these) and reloads the tables only when the mark moved, at
least every `FULL_RELOAD_SECONDS` anyway, and at once after a local change.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Table, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.base import Base, aware
from service.db.models import Item, ItemPrice, Location, Promotion


@dataclass(frozen=True)
class LocationRecord:
    id: str
    type: str
    region: str
    lat: float
    lon: float
    capabilities: tuple[str, ...]
    daily_capacity: int | None
    priority: int


@dataclass(frozen=True)
class ItemRecord:
    sku: str
    category: str
    price: float
    cost: float
    case_pack: int
    supplier: str | None
    lead_time_days: int
    season_end: str | None


@dataclass(frozen=True)
class PromotionRecord:
    id: str
    skus: tuple[str, ...]
    locations: tuple[str, ...]
    channels: tuple[str, ...]
    start: datetime
    end: datetime
    uplift: float
    per_order_cap: int | None

    def active_at(self, when: datetime) -> bool:
        return self.start <= when < self.end

    def applies(self, sku: str, location: str | None = None, channel: str | None = None) -> bool:
        """Empty `locations` or `channels` means every location or channel."""
        return (
            sku in self.skus
            and (location is None or not self.locations or location in self.locations)
            and (channel is None or not self.channels or channel in self.channels)
        )


T = TypeVar("T")
_MISSING: Any = object()

# values `MasterData.derived` keeps per snapshot before it drops the oldest (keys can carry request input,
# such as a channel name)
DERIVED_KEPT = 64


@dataclass(frozen=True)
class MasterData:
    """`items` carry their listed price; `prices` are the effective-dated price changes (approved
    markdowns) per SKU, oldest first. `priced_at(when)` is the view decisions read: each item at the
    price in effect at `when` (the latest change effective by then, else the listed price)."""

    locations: dict[str, LocationRecord]
    items: dict[str, ItemRecord]
    promotions: tuple[PromotionRecord, ...]
    prices: Mapping[str, tuple[tuple[datetime, float], ...]] = field(default_factory=dict)
    _change_times: tuple[datetime, ...] = field(init=False, compare=False, repr=False)
    # epoch (how many change times have passed) -> the priced view, filled on first use
    _views: dict[int, MasterData] = field(init=False, compare=False, repr=False)

    # what decisions derive from this snapshot (see `derived`): it lives and dies with the snapshot
    _derived: dict[Hashable, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        times = sorted({at for changes in self.prices.values() for at, _ in changes})
        object.__setattr__(self, "_change_times", tuple(times))
        object.__setattr__(self, "_views", {})

    def priced_at(self, when: datetime) -> MasterData:
        if not self.prices:
            return self
        epoch = bisect.bisect_right(self._change_times, when)
        view = self._views.get(epoch)
        if view is None:
            items = dict(self.items)
            for sku, changes in self.prices.items():
                item = items.get(sku)
                effective = [price for at, price in changes if at <= when]
                if item is not None and effective:
                    items[sku] = replace(item, price=effective[-1])
            view = MasterData(self.locations, items, self.promotions)
            self._views[epoch] = view
        return view

    def derived(self, key: Hashable, make: Callable[[], T]) -> T:
        """The value `make` derives from this snapshot, made once per `key` and kept with the snapshot (it
        is immutable, so a derived value stays right for as long as the snapshot is in use). The caller
        treats the value as read-only unless it is a cache of its own."""
        store = self._derived
        found = store.get(key, _MISSING)
        if found is _MISSING:
            found = make()
            if len(store) >= DERIVED_KEPT:
                del store[next(iter(store))]
            store[key] = found
        value: T = found
        return value

    def active_promotions(
        self, sku: str, when: datetime, location: str | None = None, channel: str | None = None
    ) -> list[PromotionRecord]:
        return [p for p in self.promotions if p.active_at(when) and p.applies(sku, location, channel)]


async def load_master_data(session: AsyncSession) -> MasterData:
    # Core rows, not ORM objects: the snapshot is reloaded every few seconds by every worker
    locations = {
        r.id: LocationRecord(
            r.id, r.type, r.region, r.lat, r.lon, tuple(r.capabilities), r.daily_capacity, r.priority
        )
        for r in await session.execute(select(*_columns(Location)))
    }
    items = {
        r.sku: ItemRecord(
            r.sku, r.category, r.price, r.cost, r.case_pack, r.supplier, r.lead_time_days, r.season_end
        )
        for r in await session.execute(select(*_columns(Item)))
    }
    promotions = tuple(
        PromotionRecord(
            r.id,
            tuple(r.skus),
            tuple(r.locations),
            tuple(r.channels),
            aware(r.start),
            aware(r.end),
            r.uplift,
            r.per_order_cap,
        )
        for r in await session.execute(select(*_columns(Promotion)).order_by(Promotion.id))
    )
    changes: dict[str, list[tuple[datetime, float]]] = {}
    for r in await session.execute(
        select(ItemPrice.sku, ItemPrice.effective_at, ItemPrice.price).order_by(
            ItemPrice.effective_at, ItemPrice.id
        )
    ):
        changes.setdefault(r.sku, []).append((aware(r.effective_at), r.price))
    return MasterData(locations, items, promotions, {sku: tuple(c) for sku, c in changes.items()})


def _change_mark_query() -> Any:
    marks: list[Any] = []
    for model in (Location, Item, Promotion):
        marks.append(select(func.count()).select_from(model).scalar_subquery())
        marks.append(select(func.max(model.updated_at)).scalar_subquery())
    marks.append(select(func.count()).select_from(ItemPrice).scalar_subquery())
    marks.append(select(func.max(ItemPrice.id)).scalar_subquery())
    return select(*marks)


# built once: the statement is immutable, and building it costs more than running it
_CHANGE_MARK = _change_mark_query()


async def change_mark(session: AsyncSession) -> tuple[Any, ...]:
    """What moves whenever master data changes: rows are only ever upserted (which sets `updated_at`) and
    price changes only added, so each table's row count and latest `updated_at` (latest id) say it."""
    return tuple((await session.execute(_CHANGE_MARK)).one())


def _columns(model: type[Base]) -> list[Any]:
    table: Table = model.__table__  # type: ignore[assignment]
    return list(table.columns)


async def upsert(session: AsyncSession, model: type[Base], rows: Sequence[dict[str, Any]], key: str) -> None:
    """Insert or replace `rows` by primary key `key`, in the caller's transaction."""
    if not rows:
        return
    now = datetime.now(UTC)
    values = [{**row, "updated_at": now} for row in rows]
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    table: Table = model.__table__  # type: ignore[assignment]
    for start in range(0, len(values), 500):
        chunk = values[start : start + 500]
        statement = insert(table).values(chunk)
        updates = {c.name: statement.excluded[c.name] for c in table.columns if c.name != key}
        await session.execute(statement.on_conflict_do_update(index_elements=[key], set_=updates))


# a snapshot whose change mark has not moved is still reloaded this often (a writer on a host whose clock
# lags could set an `updated_at` below the latest one)
FULL_RELOAD_SECONDS = 60.0


class MasterDataCache:
    """Hands out the current `MasterData` snapshot. Once it is older than `ttl` seconds the first request
    starts one check in the background (the change mark; the tables only when it moved) and requests keep
    the snapshot they have until it lands (so no request waits on it); after `invalidate` (a local change),
    or when the snapshot is older than `max_stale` seconds, requests wait for a fresh one."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl: float = 2.0) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._max_stale = 3 * ttl
        self._snapshot: MasterData | None = None
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None
        self._generation = 0  # bumped by invalidate: a load that started before it is not fresh
        self._mark: tuple[Any, ...] | None = None  # the change mark the snapshot was loaded under
        self._full_at = 0.0  # when the tables were last read
        self.checks = 0  # how many times the change mark was read (for tests and operators)
        self.loads = 0  # how many times the tables were read

    async def get(self, when: datetime | None = None) -> MasterData:
        """The snapshot with each item at its price in effect `when` (default: now)."""
        snapshot = await self._current()
        if not snapshot.prices:
            return snapshot
        return snapshot.priced_at(when or datetime.now(UTC))

    async def _current(self) -> MasterData:
        snapshot = self._snapshot
        if snapshot is not None:
            age = time.monotonic() - self._loaded_at
            if age < self._ttl:
                return snapshot
            if age < self._max_stale:
                if self._refresh is None or self._refresh.done():
                    self._refresh = asyncio.ensure_future(self._reload(self._loaded_at))
                return snapshot
        return await self._reload_now()

    async def _reload_now(self) -> MasterData:
        async with self._lock:
            while self._snapshot is None or time.monotonic() - self._loaded_at >= self._ttl:
                await self._load()
        return self._snapshot

    async def _reload(self, seen: float) -> None:
        try:
            async with self._lock:
                if self._loaded_at == seen:  # nobody reloaded (or invalidated) meanwhile
                    await self._load()
        except Exception:  # the next request past max_stale retries in the foreground and sees the error
            logging.getLogger(__name__).exception("reloading master data failed")

    async def _load(self) -> None:
        started = time.monotonic()  # the snapshot's age counts from before the query
        generation = self._generation
        async with self._sessions() as session:
            mark = await change_mark(session)
            self.checks += 1
            if (
                self._snapshot is not None
                and mark == self._mark
                and started - self._full_at < FULL_RELOAD_SECONDS
            ):
                self._loaded_at = started  # nothing changed: the snapshot stays, with its age renewed
                return
            snapshot = await load_master_data(session)
            self.loads += 1
        self._full_at = started
        if snapshot == self._snapshot:
            # unchanged: the snapshot in use stays, and with it what decisions derived from it
            snapshot = self._snapshot
        self._snapshot = snapshot
        if generation == self._generation:  # else a change landed during the read: load again
            self._loaded_at = started
            self._mark = mark

    def invalidate(self) -> None:
        self._generation += 1
        self._mark = None  # the next load reads the tables, whatever the mark says
        self._loaded_at = -self._max_stale  # the next request waits for a reload
