"""The stock moves of executed transfers, applied together: what waits while one batch is applied goes
in the next.

A stock store applies a list of events in one call (on SQL, one transaction; on Redis, one script and
one journal write), each event at most once by its id. Approvals executing at once would otherwise each
take the stock's write lock in turn, and on a SQLite file the lock changing hands between the stock's
connections and the workflow's writer costs each of them sleeps in SQLite's busy handler. When a batch
fails, its events are applied one by one, so that one event's failure is its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.stock import EventResult, StockEvent

MAX_BATCH = 100  # events per call; more wait for the next one


@dataclass(eq=False)
class Moves:
    stock: Callable[[], Any]  # the stock store (read at each batch: tests may replace it)
    _pending: list[tuple[StockEvent, asyncio.Future[EventResult]]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def apply(self, event: StockEvent) -> EventResult:
        """Apply one event, in the next batch; answers its result once that batch is applied."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[EventResult] = loop.create_future()
        self._pending.append((event, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                results = await self.stock().apply_events([event for event, _ in batch])
            except asyncio.CancelledError:  # shutting down: its callers are told so
                for _event, future in batch:
                    future.cancel()
                raise
            except Exception as error:
                if len(batch) == 1:
                    _settle(batch[0][1], None, error)
                    continue
                for event, future in batch:  # one by one: a failure is its own event's
                    try:
                        _settle(future, (await self.stock().apply_events([event]))[0], None)
                    except Exception as alone:
                        _settle(future, None, alone)
                continue
            for (_event, future), result in zip(batch, results, strict=True):
                _settle(future, result, None)


def _settle(future: asyncio.Future[EventResult], result: EventResult | None, error: Exception | None) -> None:
    if future.done():  # its caller gave up waiting
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)
