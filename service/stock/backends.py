"""Open the stock store the settings ask for: memory, SQL (the embedded default) or Redis."""

from __future__ import annotations

from service.db.sqlite_writer import SqliteWriters
from service.settings import Settings
from service.stock.memory import Clock, MemoryStockStore, utc_now
from service.stock.recovery import open_recovering
from service.stock.sql import SqlStockStore
from service.stock.store import StockStore


async def open_store(
    settings: Settings, clock: Clock = utc_now, *, sqlite_writers: SqliteWriters | None = None
) -> StockStore:
    """The store for `settings.stock.backend`; the Redis one journals into `settings.database` (on SQLite
    through `sqlite_writers`' writer of that file)."""
    stock = settings.stock
    if stock.backend == "memory":
        return MemoryStockStore(clock=clock)
    if stock.backend == "redis":
        if not stock.redis_url:
            raise ValueError("the Redis stock backend needs REDIS_URL")
        return await open_recovering(
            stock.redis_url,
            settings.database.url,
            pool_size=stock.redis_pool_size,
            clock=clock,
            sqlite_writers=sqlite_writers,
        )
    return SqlStockStore(settings.database.url, pool_size=settings.database.pool_size, clock=clock)
