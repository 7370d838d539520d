"""Replay an event stream through the decision code, once per ruleset version set, and count what happens.

A run owns an isolated `MemoryStockStore` (through `simulators.stock.RunStock`, which drives the store's
synchronous core) holding the scenario's starting stock, and walks the event stream in time order, interleaved with the work the run itself schedules (reservation commits, return
dispositions, transfers and replenishments arriving, batch syncs of stale channels, reorder reviews,
transfer checks and markdown reviews, hourly samples):

- an order from a real-time channel is sourced by the allocation decision (`service.domain.allocation`'s
  `Allocator`, the one allocation path, which `allocate` runs too) against live availability and reserved at once; what cannot be sourced is a lost sale;
- an order from a batch-synced channel is accepted against that channel's copy of availability, taken at
  its last sync (through the availability decision) and lowered only by its own sales; what it accepted
  is then sourced against live stock, and what cannot be sourced is oversold;
- a till sale takes what the store has on hand, the rest is a lost sale;
- reorder reviews, store transfers and markdown proposals go through their rulesets and domain code.

Everything is synchronous and deterministic: the same stream and rulesets give the same counts.
"""

from __future__ import annotations

import gc
import heapq
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

from simulators.counts import ChannelCounts, HourCounts, RunCounts, RunResult
from simulators.events import Event, Order, Receipt, Return, Sale
from simulators.orders import OrderObserver, Orders
from simulators.policy import PolicySet
from simulators.replenish import Replenishment
from simulators.scenario import World
from simulators.state import (
    APPROVED,
    ARRIVE,
    COMMIT,
    DAY,
    DISPOSE,
    MARKDOWNS,
    PO_ARRIVE,
    REVIEW,
    SYNC,
    TRANSFERS,
    DecisionObserver,
)

__all__ = ["ChannelCounts", "HourCounts", "ProgressFn", "Run", "RunCounts", "RunResult", "run_once"]

ProgressFn = Callable[[int, int], None]
_positive = (0).__lt__


class Run(Orders, Replenishment):
    """One replay of one stream with one version set and one stock-view mode."""

    def __init__(
        self,
        world: World,
        policies: PolicySet,
        *,
        view: str = "configured",
        observer: OrderObserver | None = None,
        decided: DecisionObserver | None = None,
        full_review: bool = False,
    ) -> None:
        """`observer`: told of every order decided (see `simulators.orders.OrderObserver`); `decided`: of
        every markdown and every reorder raised (see `simulators.state.DecisionObserver`); `full_review`:
        every reorder review decides every sku-location, not only those whose inputs changed (the same
        decisions, slower)."""
        super().__init__(world, policies, view=view)
        self.observer = observer
        self.decided = decided
        self.full_review = full_review

    def run(self, events: Sequence[Event], progress: ProgressFn | None = None) -> RunResult:
        # The replay makes no reference cycles (what it drops, reference counting frees): the cyclic
        # collector would only walk the run's growing state again and again (a tenth to a fifth of the
        # replay's time), so it is paused for the replay and resumed after it, where the run has the
        # process (its main thread: the CLI, a --jobs worker); a simulation the service runs on a worker
        # thread leaves the server's collector alone.
        pause = gc.isenabled() and threading.current_thread() is threading.main_thread()
        if pause:
            gc.disable()
        try:
            return self._replay(events, progress)
        finally:
            if pause:
                gc.enable()

    def _replay(self, events: Sequence[Event], progress: ProgressFn | None) -> RunResult:
        scenario = self.world.scenario
        horizon = self.hours_total * 3600
        for c, every in enumerate(self.sync_every):
            if self.batch[c]:
                self._schedule(0, SYNC, (c, int(every * 3600)))
        replen = scenario.replenishment
        if replen.enabled and self.policies.get("reorder") is not None:
            self._schedule(int(replen.review_every_hours * 3600), REVIEW, None)
        transfers = scenario.transfers
        if transfers.enabled and self.policies.get("transfer") is not None:
            self._schedule(int(transfers.check_every_hours * 3600), TRANSFERS, None)
        markdowns = scenario.markdowns
        if markdowns.enabled and self.policies.get("markdown") is not None:
            for at_hours in markdowns.at_hours:
                self._schedule(int(at_hours * 3600), MARKDOWNS, None)
        for day in range(1, math.ceil(self.hours_total / 24) + 1):
            self._schedule(day * 86400, DAY, None)

        total = len(events)
        step = max(1, total // 200)
        hour = 0
        queue = self.queue
        soon, later = self.commit_lanes.values()
        for n, event in enumerate(events):
            at = event.at
            if at >= horizon or at < 0:
                self.counts.skip(type(event).__name__.lower(), "outside_horizon")
                continue
            if (soon and soon[0][0] <= at) or (later and later[0][0] <= at) or (queue and queue[0][0] <= at):
                self._due_until(at)
            while (hour + 1) * 3600 <= at:
                self._close_hour(hour)
                hour += 1
            if isinstance(event, Order):
                self._order(event, hour)
            elif isinstance(event, Sale):
                self._sale(event, hour)
            elif isinstance(event, Return):
                self._return(event)
            elif isinstance(event, Receipt):
                self._receipt(event)
            if progress is not None and n % step == 0:
                progress(n, total)
        self._due_until(horizon, before=True)
        while hour < self.hours_total:
            self._close_hour(hour)
            hour += 1
        if progress is not None:
            progress(total, total)
        return self._result()

    def _close_hour(self, hour: int) -> None:
        self.hours[hour].available_end = sum(sum(filter(_positive, row)) for row in self.available)

    def _due_until(self, until: int, *, before: bool = False) -> None:
        """Do the scheduled work due at or before `until` (`before`: before it), in (time, kind, sequence)
        order: the earliest of the queue's and the commit lanes' heads first."""
        queue = self.queue
        lanes = self.commit_lanes.values()
        while True:
            item = queue[0] if queue else None
            source = None
            for lane in lanes:
                if lane and (item is None or lane[0] < item):
                    item = lane[0]
                    source = lane
            if item is None or item[0] > until or (before and item[0] == until):
                return
            if source is None:
                heapq.heappop(queue)
            else:
                source.popleft()
            self._due(item)

    def _due(self, item: tuple[int, int, int, Any]) -> None:
        at, kind, _, payload = item
        if kind == COMMIT:
            order_id, lines = payload
            self.stock.commit(lines)
            self.shipped[order_id] = lines
        elif kind == DISPOSE:
            sku, loc, qty, restock = payload
            self.stock.return_disposition(sku, loc, qty, restock)
        elif kind == ARRIVE:
            sku, loc, qty = payload[:3]
            self.stock.transfer_in(sku, loc, qty)
            if len(payload) > 3:  # a store's replenishment from its DC
                self.replenishing -= qty
                self.counts.reorder_units_received += qty
        elif kind == PO_ARRIVE:
            sku, loc, qty = payload
            self.on_order_at[sku][loc] -= qty
            self.counts.reorder_units_received += qty
            self.stock.receipt(sku, loc, qty)
        elif kind == SYNC:
            channel, every = payload
            self._sync(channel, at)
            if every > 0:
                self._schedule(at + every, SYNC, payload)
        elif kind == REVIEW:
            self._review(at)
            every = int(self.world.scenario.replenishment.review_every_hours * 3600)
            self._schedule(at + every, REVIEW, None)
        elif kind == TRANSFERS:
            self._transfers(at)
            every = int(self.world.scenario.transfers.check_every_hours * 3600)
            self._schedule(at + every, TRANSFERS, None)
        elif kind == MARKDOWNS:
            self._markdowns(at)
        elif kind == DAY:
            self.stock.new_day()
        elif kind == APPROVED:
            self._approved_transfer(at, payload)

    def _return(self, event: Return) -> None:
        sku = self.sku_index.get(event.sku)
        if sku is None:
            self.counts.skip("return", "unknown_sku")
            return
        loc: int | None = None
        qty = event.qty
        if event.order_id is not None:
            sent = [(loc_, q) for s, loc_, q in self.shipped.get(event.order_id, []) if s == sku]
            if not sent:
                self.counts.skip("return", "not_sent")  # nothing of it was ever sent
                return
            loc = sent[0][0]
            qty = min(qty, sum(q for _, q in sent))
        elif event.location is not None:
            loc = self.loc_index.get(event.location)
        if loc is None:
            self.counts.skip("return", "unknown_location")
            return
        self.counts.returns_applied += 1
        self.stock.return_in(sku, loc, qty)
        after = int(self.world.scenario.returns.disposition_after_hours * 3600)
        self._schedule(event.at + after, DISPOSE, (sku, loc, qty, event.restock))

    def _receipt(self, event: Receipt) -> None:
        sku = self.sku_index.get(event.sku)
        loc = self.loc_index.get(event.location)
        if sku is None or loc is None or event.qty <= 0:
            self.counts.skip("receipt", "unknown_location" if loc is None else "unknown_sku")
            return
        self.stock.receipt(sku, loc, event.qty)

    def _result(self) -> RunResult:
        stock_end: dict[str, int] = {}
        for loc_type in sorted({loc.type for loc in self.locations}):
            stock_end[loc_type] = sum(
                self.stock.sellable[s][i]
                for s in range(len(self.sku_ids))
                for i, loc in enumerate(self.locations)
                if loc.type == loc_type
            )
        if self.order_decisions:
            self.counts.decisions["allocation"] = self.order_decisions
        evaluations = {
            kind: {"evaluations": decider.evaluations, "memo_hits": decider.memo_hits}
            for kind, decider in sorted(self.policies.deciders.items())
        }
        return RunResult(
            label=self.policies.label,
            view=self.view,
            rulesets=self.policies.describe(),
            channels=self.channels,
            hours=self.hours,
            counts=self.counts,
            conservation=self.stock.conservation(),
            stock_end=stock_end,
            open_reservations=self.stock.open_reservations,
            on_order_units=sum(map(sum, self.on_order_at)),
            reorder_units_on_order=sum(map(sum, self.on_order_at)) + self.replenishing,
            order_decisions=self.order_decisions,
            evaluations=evaluations,
        )


def run_once(
    world: World,
    events: Sequence[Event],
    policies: PolicySet,
    *,
    view: str = "configured",
    progress: ProgressFn | None = None,
) -> RunResult:
    return Run(world, policies, view=view).run(events, progress)
