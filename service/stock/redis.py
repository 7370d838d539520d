"""Redis stock store (production): Lua scripts over per-SKU keys, journaled to SQL before acknowledging.

Keys (prefix `rp:` by default); every key of one SKU carries the hash tag `{SKU}`:
- `stock:{SKU}` hash, field `b:LOC` per bucket b in s (sellable), r (reserved), d (damaged),
  p (return_pending), t (in_transit);
- `hold:{SKU}` sorted set reservation id -> expires_at (ms): the exact expiry index;
- `part:{SKU}` hash reservation id -> this SKU's lines of it;
- `avail:{SKU}` hash `LOC` -> sellable - reserved (not clamped) for every location with any bucket: the
  availability summary, changed by every script that changes a sellable or reserved bucket, in the same
  call, so that availability reads it instead of walking the buckets (and clamps it at 0);
- `events`: the set of applied event ids, one for the whole store (an event id is unique across SKUs, as
  on every backend); every script that applies events lists it once per SKU;
- in `stock:{SKU}` too, the demand rate kept from sales: `e:LOC` (rate), `u:LOC` (its ms), `n:LOC` (updates);
- `resv:ID` hash (the reservation; `cday` and `cap` when it counts against a day's capacity) and `holds`
  (sorted set of every held reservation, for the sweeper);
- `built`: the state marker, a hash `journal` -> the last journal entry id the rebuild read, `at` -> when
  (ms), `n` -> the write counter, `layout` -> the key layout's version (`redis_layout.LAYOUT`). Only the rebuild from the journal creates it (last, once the state is in
  place; `service.stock.recovery` runs it, one worker at a time under the `rebuilding` lock). It is the
  last key of every script, which refuses with a `STOCKLOST` error when it is missing: Redis came back
  without its data, so a request answers 503 instead of "insufficient stock", and the store rebuilds
  itself. Each write script takes the next `n` and its journal entry records it (`seq`): a new script
  connection finds a Redis whose `n` is below the journal's latest `seq` behind (`check_behind`);
- per business day DAY of daily capacity, with the hash tag `{DAY}`: `capu:{DAY}` hash `r:LOC` -> units
  counted (held and committed), `caph:{DAY}` and `capp:{DAY}` the expiry index and parts of its held
  reservations (the shape of a SKU's keys, so one prune serves both). They expire some time after the last
  reservation of that day could have.

Each request is one script with every key it touches in KEYS, so a reservation is one round trip and
atomic even across SKUs on one node (a single Redis with replicas). On a Redis Cluster (`cluster=True`,
opened from a `redis+cluster://` URL) the keys that are not per SKU exist once per slot, and a request is
one script per slot it touches (see `service.stock.cluster`); a reservation across slots or with a
capacity claim is taken in per-slot steps under an intent in the journal (`service.stock.crossslot`).
Expiry is exact and lazy: every script prunes the expiry index of the SKUs it touches before acting,
and the sweeper expires idle ones; key TTLs are never used to release stock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

import msgspec
import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

import service.stock.cluster as cluster
import service.stock.demand as demand
import service.stock.ledger as ledger
from service.db.engine import create_engine
from service.db.sqlite_writer import SqliteWriters
from service.settings import DatabaseSettings
from service.stock.cluster import ClusterScripts, is_cluster_url, open_cluster, slot_tags
from service.stock.crossslot import CrossSlot
from service.stock.journal import Entry, Journal, latest_write
from service.stock.memory import Clock, utc_now
from service.stock.redis_layout import (
    AVAILABLE_DECODER,
    LAYOUT,
    LEVELS_DECODER,
    Keys,
    Script,
    capacity_keep_ms,
    from_ms,
    levels_by_location,
    parse_reservation,
    text,
    to_ms,
)
from service.stock.redis_layout import reservation_id as reservation_id  # part of this module's interface
from service.stock.sql import read_exceptions
from service.stock.store import (
    EventResult,
    IdempotencyConflict,
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
    StockEvent,
    StockException,
    StockStateLost,
    StockUnavailable,
)
from service.stock.wire import ScriptClient

log = logging.getLogger("retail_policy.stock")


class Recovery(Protocol):
    """What the store asks of the recovery attached to it (`service.stock.recovery.StockRecovery`)."""

    def wake(self) -> None: ...

    async def close(self) -> None: ...


DOWN_ERRORS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    OSError,
    # a Redis Cluster with a shard down (CLUSTERDOWN, no node for a slot, no node reachable) or moving
    # slots (TRYAGAIN, redirections past the client's retries): unavailable, as one node that is away
    redis_errors.ClusterError,
    redis_errors.TryAgainError,
    redis_errors.AskError,
    redis_errors.RedisClusterException,
)


class RedisStockStore:
    def __init__(
        self,
        client: aioredis.Redis,
        scripts: ScriptClient | ClusterScripts,
        journal: Journal,
        clock: Clock = utc_now,
        prefix: str = "rp:",
        cluster: bool = False,
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.journal = journal
        self.cluster = cluster
        self.keys = Keys(prefix, slot_tags() if cluster else None)
        self._clock = clock
        self._levels = Script("levels")
        self._available = Script("available")
        self._reserve = Script("reserve")
        self._finish = Script("finish")
        self._events = Script("events")
        self._snapshot = Script("snapshot")
        self._revert = Script("revert")
        self._capacity = Script("capacity")
        self.demand = demand.LedgerDemand(self._demand_states, clock)
        # set by `StockRecovery`: woken whenever a call finds the state marker missing
        self.recovery: Recovery | None = None
        self._down_logged = -1.0
        # on a cluster: orders and finishes across slots, under intents (service.stock.crossslot)
        self.cross = CrossSlot(self) if cluster else None
        if not cluster:
            scripts.on_connect = self.check_behind

    @classmethod
    async def open(
        cls,
        redis_url: str,
        journal_url: str,
        *,
        pool_size: int = 64,
        clock: Clock = utc_now,
        prefix: str = "rp:",
        sqlite_writers: SqliteWriters | None = None,
    ) -> RedisStockStore:
        """Create the blocking connection pool and the journal's engine; Redis may still be down.

        A `redis+cluster://` URL opens redis-py's cluster client (one connection pool per node; its command
        methods are those of the single-node client, which the store is written against). The store opened
        so does not rebuild itself: `service.stock.recovery.open_recovering` opens one that does."""
        journal = Journal(create_engine(DatabaseSettings(url=journal_url)), sqlite_writers or SqliteWriters())
        if is_cluster_url(redis_url):
            nodes = open_cluster(redis_url, pool_size)
            client = cast(aioredis.Redis, nodes)
            return cls(
                client, ClusterScripts(nodes, redis_url), journal, clock=clock, prefix=prefix, cluster=True
            )
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url,
            max_connections=pool_size,
            timeout=5,
            socket_connect_timeout=1,
            socket_timeout=5,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
        )
        client = aioredis.Redis(connection_pool=pool)
        scripts = ScriptClient(redis_url, connect_timeout=1, reply_timeout=5)
        return cls(client, scripts, journal, clock=clock, prefix=prefix)

    def now(self) -> datetime:
        return self._clock()

    def _now_ms(self) -> int:
        return to_ms(self._clock())

    async def _call(self, script: Script, keys: Sequence[str], args: Sequence[Any], tag: str = "") -> Any:
        """Run a script with the state marker (of the keys' slot `tag` on a cluster) as its last key."""
        try:
            return await self.scripts.evalsha(script.sha, script.text, (*keys, self.keys.built_at(tag)), args)
        except DOWN_ERRORS as error:
            raise self._down(error) from error
        except redis_errors.ResponseError as error:
            if str(error).startswith("STOCKLOST"):
                raise self._lost() from error
            raise

    def _down(self, error: Exception) -> StockUnavailable:
        # the address and the driver's words go to the log (once a second at most), not to the caller
        moment = time.monotonic()
        if moment - self._down_logged >= 1.0:
            self._down_logged = moment
            log.warning("Redis is not answering: %s: %s", type(error).__name__, error)
        return StockUnavailable("Redis is not answering", retry_after=1)

    def _lost(self) -> StockStateLost:
        """The error for a missing state marker; wakes the rebuild."""
        if self.recovery is not None:
            self.recovery.wake()
        return StockStateLost()

    async def check_behind(self) -> None:
        """Run on every new script connection (a restart or a failover drops the old one), before its
        first script: when the marker's write counter is below the journal's latest write, Redis came back
        with older data (a snapshot, a lagging replica) and the marker is deleted, so that the scripts
        refuse and the store rebuilds. The journal is read first: every write it holds by then was
        numbered by Redis before, so a Redis that lost nothing is never behind. A marker of another key
        layout than `LAYOUT` (state written by an older version, without the keys these scripts keep) is
        deleted too."""
        try:
            # a slow journal must not hold back the scripts for long: they wait on this connection
            async with asyncio.timeout(5):
                latest = await latest_write(self.journal.engine)
                counter, layout = await self.client.hmget(self.keys.built, ["n", "layout"])
            if counter is not None and int(counter) < latest:
                log.warning(
                    "stock state behind the journal (Redis at write %s, the journal at %d): rebuilding",
                    text(counter),
                    latest,
                )
                await self.client.delete(self.keys.built)
            elif counter is not None and (layout is None or text(layout) != LAYOUT):
                log.warning("stock state in another key layout than %s: rebuilding", LAYOUT)
                await self.client.delete(self.keys.built)
        # the check waits for the next connection then; the marker's presence still guards every script
        except Exception as error:
            log.warning("stock state not checked against the journal: %s: %s", type(error).__name__, error)

    async def has_marker(self) -> bool:
        """Whether the state marker is there, of this key layout (raises StockUnavailable when Redis does
        not answer); on a cluster, the marker of one slot of every primary (a shard that lost its data lost
        them all)."""
        try:
            if not self.cluster:
                return await self.client.hget(self.keys.built, "layout") == LAYOUT.encode()
            markers = await self._marker_sample()
            pipe = self.client.pipeline(transaction=False)
            for key in markers:
                pipe.hget(key, "layout")
            return all(found == LAYOUT.encode() for found in await pipe.execute())
        except DOWN_ERRORS as error:
            raise self._down(error) from error

    async def _marker_sample(self) -> list[str]:
        nodes = cast(RedisCluster, self.client)
        await nodes.initialize()
        assert self.keys.tags is not None
        return [self.keys.built_at(self.keys.tags.tags[slot]) for slot in cluster.first_slots(nodes)]

    async def drop_markers(self) -> None:
        """Delete the state marker (every slot's on a cluster): every script refuses until the rebuild."""
        if not self.cluster:
            await self.client.delete(self.keys.built)
            return
        markers = self.all_markers()
        await cluster.unlink_on_nodes(cast(RedisCluster, self.client), markers, range(len(markers)))

    async def write_markers(self, mapping: dict[str, Any]) -> None:
        """Write every slot's state marker on a cluster (the single node's is written under the lock)."""
        markers = self.all_markers()  # slot i's marker is tagged with slot i's tag
        await cluster.hset_on_nodes(cast(RedisCluster, self.client), markers, mapping, range(len(markers)))

    def all_markers(self) -> list[str]:
        """Every state marker key: one per slot on a cluster."""
        if self.keys.tags is None:
            return [self.keys.built]
        return [self.keys.built_at(tag) for tag in self.keys.tags.tags]

    async def _checked_pipeline(self, pipe: Any) -> list[Any]:
        """Run a pipeline that starts with EXISTS of the state marker, in the same round trip; its other
        replies, or StockStateLost when the marker is missing."""
        try:
            present, *found = await pipe.execute()
        except DOWN_ERRORS as error:
            raise self._down(error) from error
        if not present:
            raise self._lost()
        return list(found)

    # ---- reads ----------------------------------------------------------------------------------

    async def get_levels(self, skus: Sequence[str]) -> dict[str, dict[str, Levels]]:
        if not skus:
            return {}
        unique = list(dict.fromkeys(skus))
        if self.cluster:
            found: dict[str, dict[str, Levels]] = {}
            for tag, group in self.keys.by_slot(unique).items():
                found.update(await self._levels_at(group, tag))
            return {sku: found[sku] for sku in unique}
        return await self._levels_at(unique, "")

    async def _levels_at(self, unique: list[str], tag: str) -> dict[str, dict[str, Levels]]:
        keys = [key for sku in unique for key in self.keys.sku_keys(sku)]
        answer = await self._call(self._levels, keys, [self._now_ms()], tag)
        per_sku = LEVELS_DECODER.decode(answer)
        return {sku: levels_by_location(rows) for sku, rows in zip(unique, per_sku, strict=True)}

    async def get_available(self, skus: Sequence[str]) -> dict[str, dict[str, int]]:
        if not skus:
            return {}
        if self.cluster:
            found: dict[str, dict[str, int]] = {}
            for tag, group in self.keys.by_slot(skus).items():
                group_keys = [key for sku in group for key in self.keys.sku_keys(sku)]
                answer = await self._call(self._available, group_keys, [self._now_ms()], tag)
                found.update(zip(group, AVAILABLE_DECODER.decode(answer), strict=True))
            return {sku: found[sku] for sku in dict.fromkeys(skus)}
        unique, keys = self.keys.read_keys(skus)
        answer = await self._call(self._available, keys, [self._now_ms()])
        return dict(zip(unique, AVAILABLE_DECODER.decode(answer), strict=True))

    async def get_capacity_used(self, day: str, locations: Sequence[str]) -> dict[str, int]:
        ledger.validate_day(day, "day")
        wanted = list(dict.fromkeys(locations))
        if not wanted:
            return {}
        counts = await self._call(
            self._capacity, self.keys.capacity(day), [self._now_ms(), *wanted], self.keys.day_tag(day)
        )
        return {location: int(n) for location, n in zip(wanted, counts, strict=True)}

    async def get_reservation(self, reservation_id: str) -> Reservation | None:
        found = await self._load(reservation_id)
        return None if found is None else found[0]

    async def _load(self, reservation_id: str) -> tuple[Reservation, str | None] | None:
        """The reservation and the capacity day it counts against (None when it counts against none)."""
        tag = self.keys.home(reservation_id)
        if tag is None:
            return None
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(self.keys.built_at(tag))
        pipe.hgetall(self.keys.reservation(reservation_id))
        (flat,) = await self._checked_pipeline(pipe)
        if not flat:
            return None
        day = flat.get(b"cday")
        reservation = parse_reservation([x for pair in flat.items() for x in pair], self._now_ms())
        return reservation, None if day is None else text(day)

    async def list_exceptions(self, limit: int = 100) -> list[StockException]:
        return await read_exceptions(self.journal.engine, limit)

    async def _demand_states(self, pairs: Sequence[demand.Pair]) -> dict[demand.Pair, demand.DemandState]:
        markers = list(dict.fromkeys(self.keys.built_at(self.keys.tag(sku)) for sku, _ in pairs))
        markers = markers or [self.keys.built]
        pipe = self.client.pipeline(transaction=False)
        for marker in markers:
            pipe.exists(marker)
        for sku, location in pairs:
            pipe.hmget(self.keys.stock(sku), [f"e:{location}", f"u:{location}"])
        try:
            replies = await pipe.execute()
        except DOWN_ERRORS as error:
            raise self._down(error) from error
        if not all(replies[: len(markers)]):
            raise self._lost()
        found = replies[len(markers) :]
        return {
            pair: demand.DemandState(float(rate), int(at_ms))
            for pair, (rate, at_ms) in zip(pairs, found, strict=True)
            if rate is not None and at_ms is not None
        }

    # ---- writes ---------------------------------------------------------------------------------

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

    async def reserve(self, request: ReservationRequest) -> ReservationResult:
        ledger.validate_request(request)
        fingerprint = ledger.request_fingerprint(request)
        lines = ledger.merge_lines(request.lines)
        by_sku: dict[str, list[ReservationLine]] = {}
        for line in lines:
            by_sku.setdefault(line.sku, []).append(line)
        rid = reservation_id(request.idempotency_key)
        claim = request.capacity
        tag = ""
        if self.cross is not None:
            tags = {self.keys.tag(sku) for sku in by_sku}
            if len(tags) > 1 or (claim is not None and bool(claim.limits)):
                return await self.cross.reserve(request, fingerprint, lines)
            tag = tags.pop()
            rid = f"{rid}-{tag}"
        now = self._clock()
        now_ms = to_ms(now)
        expires_ms = to_ms(now + timedelta(seconds=request.ttl_seconds))
        keys = [self.keys.reservation(rid), self.keys.holds_at(tag)]
        args: list[Any] = [
            rid,
            now_ms,
            expires_ms,
            fingerprint,
            int(request.allow_partial),
            request.order_id,
            request.channel,
            request.idempotency_key,
        ]
        if claim is not None and claim.limits:
            keys += self.keys.capacity(claim.day)
            args.append(len(claim.limits))
            for limit in claim.limits:
                args += [limit.location, limit.limit]
            args += [claim.day, capacity_keep_ms(claim.day, now_ms)]
        else:
            args.append(0)
        for sku, sku_lines in by_sku.items():
            keys += self.keys.sku_keys(sku)
            args += [sku, len(sku_lines)]
            for line in sku_lines:
                args += [line.location, line.qty, line.floor]
        outcome = await self._call(self._reserve, keys, args, tag)
        verdict = text(outcome[0])
        if verdict == "conflict":
            raise IdempotencyConflict(
                f"idempotency key {request.idempotency_key!r} was used with another request body"
            )
        if verdict == "replay":
            found = parse_reservation(outcome[1], now_ms)
            return ReservationResult(found, tuple(ledger.replayed_short(request, found.lines)), replayed=True)
        flat_short = outcome[1] if verdict == "short" else outcome[2]
        short = tuple(
            ShortLine(
                text(flat_short[i]), text(flat_short[i + 1]), int(flat_short[i + 2]), int(flat_short[i + 3])
            )
            for i in range(0, len(flat_short), 4)
        )
        if verdict == "short":
            return ReservationResult(None, short)
        granted = outcome[1]
        reservation = Reservation(
            id=rid,
            order_id=request.order_id,
            channel=request.channel,
            idempotency_key=request.idempotency_key,
            lines=tuple(
                ReservedLine(text(granted[i]), text(granted[i + 1]), int(granted[i + 2]))
                for i in range(0, len(granted), 3)
            ),
            status="held",
            expires_at=from_ms(expires_ms),
            created_at=from_ms(now_ms),
        )
        record: dict[str, Any] = {
            "id": rid,
            "order_id": request.order_id,
            "channel": request.channel,
            "key": request.idempotency_key,
            "fp": fingerprint,
            "exp": expires_ms,
            "created": now_ms,
            "lines": [[line.sku, line.location, line.qty] for line in reservation.lines],
            "seq": outcome[3],
        }
        day: str | None = None
        counted = ledger.capacity_taken(claim, reservation.lines)
        if claim is not None and counted:
            day = claim.day
            record["cap"] = [day, [[loc, qty] for loc, qty in counted.items()]]
        entry = Entry("reserve", rid, now_ms, ledger.hold_deltas(reservation.lines, 1), record)
        if self.cluster:
            await self._claim_key(reservation, fingerprint)
        try:
            await self.journal.append([entry])
        except StockUnavailable:
            await self._run_finish(reservation, day, "forget", swallow_down=True)
            raise
        return ReservationResult(reservation, short)

    async def _claim_key(self, reservation: Reservation, fingerprint: str) -> None:
        """On a cluster, the idempotency key's own record (see service.stock.cluster): a key first used
        with a body on another slot makes this grant a conflict, taken back before answering."""
        key = self.keys.idempotency(reservation.id)
        try:
            before = await self.client.set(key, fingerprint, nx=True, get=True)
        except DOWN_ERRORS as error:
            await self._run_finish(reservation, None, "forget", swallow_down=True)
            raise self._down(error) from error
        if before is not None and text(before) != fingerprint:
            await self._run_finish(reservation, None, "forget", swallow_down=True)
            raise IdempotencyConflict(
                f"idempotency key {reservation.idempotency_key!r} was used with another request body"
            )

    async def _run_finish(
        self, reservation: Reservation, day: str | None, action: str, swallow_down: bool = False
    ) -> Any:
        skus = list(dict.fromkeys(line.sku for line in reservation.lines))
        tag = self.keys.home(reservation.id) or ""
        if self.cluster:
            # the home slot's part (an expiry, a single-slot reservation); the other slots' parts expire
            # there by themselves, a commit or release of a cross-slot one goes through service.stock.crossslot
            skus = [sku for sku in skus if self.keys.tag(sku) == tag]
            day = None
        keys = [self.keys.reservation(reservation.id), self.keys.holds_at(tag)]
        if day is not None:
            keys += self.keys.capacity(day)
        for sku in skus:
            keys += self.keys.sku_keys(sku)
        args = [reservation.id, self._now_ms(), action, int(day is not None), *skus]
        try:
            return await self._call(self._finish, keys, args, tag)
        except StockUnavailable:
            if swallow_down:
                return None
            raise

    async def _finish_reservation(self, reservation_id: str, action: str) -> Reservation:
        loaded = await self._load(reservation_id)
        if loaded is None:
            raise ReservationNotFound(f"no reservation {reservation_id!r}")
        found, day = loaded
        if self.cross is not None and self.cross.is_cross_slot(found, day):
            return await self.cross.finish(found, day, action)
        outcome = await self._run_finish(found, day, action)
        verdict = text(outcome[0])
        if verdict == "missing":
            raise ReservationNotFound(f"no reservation {reservation_id!r}")
        now_ms = self._now_ms()
        done = parse_reservation(outcome[1], now_ms)
        if verdict == "state":
            raise ReservationStateError(f"reservation {reservation_id} is {done.status}", done.status)
        if verdict == "done":
            deltas = (
                ledger.commit_deltas(done.lines) if action == "commit" else ledger.hold_deltas(done.lines, -1)
            )
            kind = "commit" if action == "commit" else "release"
            try:
                await self.journal.append([Entry(kind, done.id, now_ms, deltas, {"seq": outcome[2]})])
            except StockUnavailable:
                await self._run_finish(done, day, f"undo_{action}", swallow_down=True)
                raise
        return done

    async def commit(self, reservation_id: str) -> Reservation:
        return await self._finish_reservation(reservation_id, "commit")

    async def release(self, reservation_id: str) -> Reservation:
        return await self._finish_reservation(reservation_id, "release")

    async def sweep_expired(self, now: datetime | None = None) -> int:
        moment_ms = to_ms(now or self._clock())
        # the marker check here (and the script connection's, when it was lost) also notices a loss on a
        # worker that gets no requests
        await self._scripts_connected()
        if self.cross is not None:
            # the intents of cross-slot requests whose worker stopped (their lease lapsed)
            await self.cross.recover_due()
            return await self._sweep_slots(moment_ms)
        return await self._sweep_at("", moment_ms)

    async def _sweep_slots(self, moment_ms: int) -> int:
        """On a cluster: every slot's holds index that exists, found by a scan of every primary."""
        if not await self.has_marker():
            raise self._lost()
        count = 0
        pattern = f"{self.keys.prefix}holds:{{*"
        try:
            async for key in self.client.scan_iter(match=pattern, count=1000):
                count += await self._sweep_at(text(key).rpartition("{")[2].rstrip("}"), moment_ms)
        except DOWN_ERRORS as error:
            raise self._down(error) from error
        return count

    async def _sweep_at(self, tag: str, moment_ms: int) -> int:
        holds = self.keys.holds_at(tag)
        pipe = self.client.pipeline(transaction=False)
        pipe.exists(self.keys.built_at(tag))
        pipe.zrangebyscore(holds, "-inf", moment_ms, start=0, num=1000)
        (due,) = await self._checked_pipeline(pipe)
        count = 0
        for raw in due:
            loaded = await self._load(text(raw))
            if loaded is None:
                await self.client.zrem(holds, text(raw))
                continue
            outcome = await self._run_finish(*loaded, "expire")
            if text(outcome[0]) == "expired":
                count += 1
        return count

    async def wipe(self) -> int:
        """Delete every key of this store's prefix but the rebuild's lock (a rebuild starts from nothing)."""
        deleted = 0
        batch: list[Any] = []
        lock = self.keys.rebuilding.encode()
        async for key in self.client.scan_iter(match=f"{self.keys.prefix}*", count=1000):
            if key == lock:
                continue
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await self._unlink(batch)
                batch = []
        if batch:
            deleted += await self._unlink(batch)
        return deleted

    async def _unlink(self, keys: list[Any]) -> int:
        if not self.cluster:
            return int(await self.client.unlink(*keys))
        return await cluster.unlink_on_nodes(cast(RedisCluster, self.client), keys)

    async def ping(self) -> None:
        """Raise StockUnavailable when Redis does not answer, StockStateLost when it lost the stock state
        (a script connection lost meanwhile is opened again first, so that its check runs)."""
        await self._scripts_connected()
        if not await self.has_marker():
            raise self._lost()

    async def _scripts_connected(self) -> None:
        try:
            await self.scripts.connected()
        except DOWN_ERRORS as error:
            raise self._down(error) from error

    async def close(self) -> None:
        if self.recovery is not None:
            await self.recovery.close()
        await self.journal.close()
        await self.journal.engine.dispose()
        await self.scripts.close()
        await self.client.aclose()
        if not self.cluster:
            await self.client.connection_pool.disconnect()
