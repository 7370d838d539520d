"""The stock moves of executed transfers, applied together: what waits while one batch is applied goes
in the next.

A stock store applies a list of events in one call (on SQL, one transaction; on Redis, one script and
one journal write), each event at most once by its id. Approvals executing at once would otherwise each
take the stock's write lock in turn, and on a SQLite file the lock changing hands between the stock's
connections and the workflow's writer costs each of them sleeps in SQLite's busy handler. When a batch
fails, its events are applied one by one, so that one event's failure is its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.stock import EventResult, StockEvent
from service.workflow.batches import Batches

MAX_BATCH = 100  # events per call; more wait for the next one


def shipment_event(shipped: dict[str, Any], at: datetime) -> StockEvent:
    """The `transfer_out` of an executed transfer, from its `executed` step's detail (`shipped`)."""
    return StockEvent(
        shipped["event_id"],
        "transfer_out",
        shipped["sku"],
        shipped["from_location"],
        shipped["qty"],
        at,
        None,
        shipped["to_location"],
        shipped["shipment_id"],
    )


@dataclass(eq=False)
class Moves:
    stock: Callable[[], Any]  # the stock store (read at each batch: tests may replace it)
    _batches: Batches[StockEvent, EventResult] = field(init=False)

    def __post_init__(self) -> None:
        self._batches = Batches(self._apply_all, MAX_BATCH)

    async def apply(self, event: StockEvent) -> EventResult:
        """Apply one event, in the next batch; answers its result once that batch is applied."""
        return await self._batches.submit(event)

    async def _apply_all(self, events: Sequence[StockEvent]) -> list[EventResult]:
        return list(await self.stock().apply_events(events))
