"""Background task that expires idle reservations (the lazy pruning covers every SKU that is touched)."""

from __future__ import annotations

import asyncio
import logging

from service.stock.store import StockError, StockStore

log = logging.getLogger("retail_policy.stock")


async def sweep_forever(store: StockStore, interval_seconds: float) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            expired = await store.sweep_expired()
        except StockError as error:
            # The backing service is down; the next round tries again and requests answer 503 meanwhile.
            log.warning("reservation sweep skipped: %s", error)
            continue
        if expired:
            log.info("expired %d idle reservations", expired)


def start_sweeper(store: StockStore, interval_seconds: float) -> asyncio.Task[None]:
    return asyncio.create_task(sweep_forever(store, interval_seconds), name="stock-sweeper")
