"""Recovery of executed transfers' stock moves.

A transfer's approval records it `executed` in one transaction, then moves its stock (one `transfer_out`,
applied at most once by its event id). A worker that stops in between, or a stock store that fails the
move, leaves an executed transfer whose stock has not moved. Each sweeper round applies again the moves of
transfers executed since its last round, once past their grace, but for those this worker moved itself: a
move that happened comes back a duplicate and changes nothing, a missing one is applied. A receipt naming
a transfer's shipment applies that transfer's move again before it (`apply_again`), since the receipt
closes the case and the round looks only at transfers still executed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.base import aware
from service.stock import StockEvent
from service.workflow.moves import shipment_event
from service.workflow.rounds import RECOVERY_OVERLAP, executed_steps, executed_transfers

MOVES_PER_CALL = 100  # moves handed to the stock store at once
MOVED_HERE_LIMIT = 200_000  # moves a worker remembers having applied, between two rounds


@dataclass(eq=False)
class MoveRecovery:
    sessions: Callable[[], async_sessionmaker[AsyncSession]]
    stock: Callable[[], Any]  # the stock store (read at each call: tests may replace it)
    grace: timedelta
    lookback: timedelta  # how far back a worker's first round looks
    # executed transfers updated up to this time are known moved
    checked: datetime | None = None
    # executed transfers whose stock this worker moved (case id -> updated_at), since `checked`
    moved_here: dict[str, datetime] = field(default_factory=dict)

    def moved(self, case_id: str, at: datetime) -> None:
        """This worker moved the stock of the transfer executed at `at`."""
        if len(self.moved_here) >= MOVED_HERE_LIMIT:  # no round prunes it: forget (they are checked)
            self.moved_here.clear()
        self.moved_here[case_id] = at

    async def round(self, now: datetime) -> int:
        """Apply the moves of transfers executed since the last round that a stopped worker (or a failed
        move) left unapplied; answers how many were missing."""
        upto = now - self.grace
        since = (self.checked or now - self.lookback) - RECOVERY_OVERLAP
        async with self.sessions()() as session:
            rows = (await session.execute(executed_transfers(since, upto))).all()
            mine = self.moved_here
            unknown = [case_id for case_id, updated in rows if mine.get(case_id) != aware(updated)]
            events = await _moves_of(session, unknown)
        missing = await self._apply(events)
        self.checked = upto
        self.moved_here = {k: at for k, at in mine.items() if at > upto - RECOVERY_OVERLAP}
        return missing

    async def apply_again(self, case_ids: Sequence[str]) -> int:
        """Apply again the moves of these cases' `executed` steps (a case without one has none); answers
        how many were missing."""
        if not case_ids:
            return 0
        async with self.sessions()() as session:
            events = await _moves_of(session, case_ids)
        return await self._apply(events)

    async def _apply(self, events: Sequence[StockEvent]) -> int:
        applied = 0
        for start in range(0, len(events), MOVES_PER_CALL):
            results = await self.stock().apply_events(events[start : start + MOVES_PER_CALL])
            applied += sum(result.status == "applied" for result in results)
        return applied


async def _moves_of(session: AsyncSession, case_ids: Sequence[str]) -> list[StockEvent]:
    details = []
    for start in range(0, len(case_ids), 500):
        details += (await session.execute(executed_steps(case_ids[start : start + 500]))).all()
    return [shipment_event(detail, aware(at)) for detail, at in details]
