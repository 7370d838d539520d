"""The Redis stock store's ledger writes: counted snapshots and stock events, one script per slot, and
their undoing when the journal cannot take them (the layout `service.stock.redis` documents)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

import service.stock.demand as demand
import service.stock.ledger as ledger
from service.stock.journal import Entry
from service.stock.redis_base import DOWN_ERRORS, RedisBase
from service.stock.redis_layout import Script, text, to_ms
from service.stock.store import (
    EventResult,
    Levels,
    SnapshotRow,
    StockEvent,
    StockException,
    StockUnavailable,
)


class RedisLedger(RedisBase):
    """Snapshots and events on Redis, journaled before they are acknowledged."""

    _events: Script
    _snapshot: Script
    _revert: Script

    async def put_snapshot(self, rows: Sequence[SnapshotRow]) -> int:
        ledger.validate_snapshot(rows)
        if not rows:
            return 0
        now_ms = self._now_ms()
        # one script per slot (one on a single node); rows of other slots already set are put back when
        # a later slot's script fails
        deltas: list[ledger.Delta | None] = [None] * len(rows)
        seq = 0
        for tag, group in self.keys.by_slot([row.sku for row in rows]).items():
            members = set(group)
            positions = [i for i, row in enumerate(rows) if row.sku in members]
            try:
                previous, seq_here = await self._snapshot_at([rows[i] for i in positions], now_ms, tag)
            except StockUnavailable:
                await self._revert_deltas([(d, "") for d in deltas if d is not None])
                raise
            seq = max(seq, seq_here)
            for i, (s, d, p, t) in zip(positions, previous, strict=True):
                levels = Levels(sellable=int(s), damaged=int(d), return_pending=int(p), in_transit=int(t))
                deltas[i] = ledger.snapshot_delta(rows[i], levels)
        done = [d for d in deltas if d is not None]
        entry = Entry("snapshot", "", now_ms, done, {"seq": seq})
        try:
            await self.journal.append([entry])
        except StockUnavailable:
            await self._revert_deltas([(delta, "") for delta in done])
            raise
        return len(rows)

    async def _snapshot_at(self, rows: Sequence[SnapshotRow], now_ms: int, tag: str) -> tuple[list[Any], int]:
        skus = list(dict.fromkeys(row.sku for row in rows))
        index = {sku: 1 + 4 * i for i, sku in enumerate(skus)}
        keys = [key for sku in skus for key in self.keys.sku_keys(sku)]
        args: list[Any] = [now_ms]
        for row in rows:
            args += [
                index[row.sku],
                row.location,
                row.sellable,
                row.damaged,
                row.return_pending,
                row.in_transit,
            ]
        *previous, seq = await self._call(self._snapshot, keys, args, tag)
        return previous, int(seq)

    async def apply_events(self, events: Sequence[StockEvent]) -> list[EventResult]:
        ledger.validate_events(events)
        if not events:
            return []
        now = self._clock()
        now_ms = to_ms(now)
        if self.cluster:
            free = await self._claim_event_ids(events)
            taken = [ev for ev, ok in zip(events, free, strict=True) if ok]
            found, seq = await self._events_per_slot(taken, now) if taken else ([], 0)
            answers = iter(found)
            outcomes = [next(answers) if ok else [b"duplicate"] for ok in free]
        else:
            outcomes, seq = await self._events_per_slot(events, now)
        results: list[EventResult | None] = []
        entries: list[Entry] = []
        applied: list[tuple[int, StockEvent, list[ledger.Delta]]] = []
        undo_demand: dict[str, list[str]] = {}
        for ev, outcome in zip(events, outcomes, strict=True):
            if text(outcome[0]) == "duplicate":
                results.append(EventResult(ev.event_id, "duplicate"))
                continue
            kind, shortfall, ds, dd, dp, dt, dest = text(outcome[1]), *(int(x) for x in outcome[2:8])
            deltas = [
                ledger.Delta(ev.sku, ev.location, sellable=ds, damaged=dd, return_pending=dp, in_transit=dt)
            ]
            if dest and ev.to_location:
                deltas.append(ledger.Delta(ev.sku, ev.to_location, in_transit=dest))
            anomaly = (
                StockException(kind, ev.sku, ev.location, ev.event_id, ev.qty, shortfall, ev.at or now)
                if kind
                else None
            )
            record: dict[str, Any] = {"sku": ev.sku, "seq": seq}
            if len(outcome) > 8:
                # A sale: the rate it left (exact text), its time and sequence number, for the rebuild.
                rate, at_ms, rate_seq, prev_rate, prev_at = (text(x) for x in outcome[8:13])
                record["demand"] = [ev.location, rate, int(at_ms), int(rate_seq)]
                undo_demand[ev.event_id] = [rate_seq, prev_rate, prev_at]
            applied.append((len(results), ev, deltas))
            results.append(None)
            entries.append(Entry("event", ev.event_id, now_ms, deltas, record, anomaly))
        try:
            ids = await self.journal.append(entries)
        except StockUnavailable:
            items = [(d, ev.event_id) for _, ev, deltas in applied for d in deltas]
            await self._revert_deltas(items, undo_demand)
            raise
        for (slot, ev, _), entry, ident in zip(applied, entries, ids, strict=True):
            anomaly = entry.exception
            if anomaly is not None and ident is not None:
                anomaly = msgspec.structs.replace(anomaly, id=ident)
            results[slot] = EventResult(ev.event_id, "applied", anomaly)
        return [r for r in results if r is not None]

    async def _events_per_slot(self, events: Sequence[StockEvent], now: datetime) -> tuple[list[Any], int]:
        """Apply the events, one script per slot (one on a single node): each event's outcome (in order)
        and the highest write number. When a later slot's script fails, the slots already applied are
        put back (events are independent, so no other slot's outcome depends on them)."""
        outcomes: list[Any] = [None] * len(events)
        seq = 0
        done: list[tuple[int, StockEvent]] = []
        for tag, group in self.keys.by_slot([ev.sku for ev in events]).items():
            members = set(group)
            positions = [i for i, ev in enumerate(events) if ev.sku in members]
            index = {sku: 1 + 5 * i for i, sku in enumerate(group)}
            keys = [key for sku in group for key in [*self.keys.sku_keys(sku), self.keys.events_at(tag)]]
            args: list[Any] = [to_ms(now), repr(demand.HALF_LIFE_DAYS)]
            for i in positions:
                ev = events[i]
                args += [
                    index[ev.sku],
                    ev.event_id,
                    ev.type,
                    ev.location,
                    ev.qty,
                    ev.disposition or "",
                    ev.to_location or "",
                    demand.to_ms(ev.at or now),
                ]
            try:
                *found, seq_here = await self._call(self._events, keys, args, tag)
            except StockUnavailable:
                await self._revert_applied([(i, events[i]) for i, _ in done], outcomes)
                raise
            seq = max(seq, int(seq_here))
            for i, outcome in zip(positions, found, strict=True):
                outcomes[i] = outcome
                done.append((i, events[i]))
        return outcomes, seq

    async def _claim_event_ids(self, events: Sequence[StockEvent]) -> list[bool]:
        """On a cluster, per event whether its id is free for it: each id's own record (see
        service.stock.cluster) names the SKU it was first sent for, claimed before any slot's script runs,
        so an id already used for a SKU on another slot is a duplicate and changes nothing. A claim whose
        event was then not applied (a crash, Redis away) stays this SKU's: the retry applies it."""
        pipe = self.client.pipeline(transaction=False)
        for ev in events:
            pipe.set(self.keys.event_id(ev.event_id), ev.sku, nx=True, get=True)
        try:
            owners = await pipe.execute()
        except DOWN_ERRORS as error:
            raise self._down(error) from error
        return [owner is None or text(owner) == ev.sku for ev, owner in zip(events, owners, strict=True)]

    async def _revert_applied(self, done: Sequence[tuple[int, StockEvent]], outcomes: Sequence[Any]) -> None:
        items: list[tuple[ledger.Delta, str]] = []
        undo_demand: dict[str, list[str]] = {}
        for i, ev in done:
            outcome = outcomes[i]
            if text(outcome[0]) == "duplicate":
                continue
            ds, dd, dp, dt, dest = (int(x) for x in outcome[3:8])
            delta = ledger.Delta(
                ev.sku, ev.location, sellable=ds, damaged=dd, return_pending=dp, in_transit=dt
            )
            items.append((delta, ev.event_id))
            if dest and ev.to_location:
                items.append((ledger.Delta(ev.sku, ev.to_location, in_transit=dest), ev.event_id))
            if len(outcome) > 8:
                undo_demand[ev.event_id] = [text(outcome[10]), text(outcome[11]), text(outcome[12])]
        if items:
            await self._revert_deltas(items, undo_demand)

    async def _revert_deltas(
        self, items: Sequence[tuple[ledger.Delta, str]], undo_demand: dict[str, list[str]] | None = None
    ) -> None:
        """Best effort: undo what a script did when its journal entry could not be written.

        `undo_demand` maps a sale's event id to the demand sequence number it set and the rate and time
        before it; items are undone last first, so each sale's demand update is the latest when undone.
        """
        undo_demand = dict(undo_demand or {})
        for tag, group in self.keys.by_slot([delta.sku for delta, _ in items]).items():
            members = set(group)
            await self._revert_at([item for item in items if item[0].sku in members], undo_demand, tag)

    async def _revert_at(
        self, items: Sequence[tuple[ledger.Delta, str]], undo_demand: dict[str, list[str]], tag: str
    ) -> None:
        skus = list(dict.fromkeys(delta.sku for delta, _ in items))
        index = {sku: 1 + 3 * i for i, sku in enumerate(skus)}
        keys = [
            key
            for sku in skus
            for key in (self.keys.stock(sku), self.keys.events_at(tag), self.keys.avail(sku))
        ]
        args: list[Any] = []
        for delta, event_id in reversed(items):
            seq, prev_rate, prev_at = undo_demand.pop(event_id, None) or ["", "", ""]
            args += [
                index[delta.sku],
                delta.location,
                delta.sellable,
                delta.damaged,
                delta.return_pending,
                delta.in_transit,
                event_id,
                seq,
                prev_rate,
                prev_at,
            ]
        # When Redis went away too, the rebuild from the journal is the way back.
        with contextlib.suppress(StockUnavailable):
            await self._call(self._revert, keys, args, tag)
