"""Redis stock store (production): Lua scripts over per-SKU keys, journaled to SQL before acknowledging.

Keys (prefix `rp:` by default); every key of one SKU carries the hash tag `{SKU}`:
- `stock:{SKU}` hash, field `b:LOC` per bucket b in s (sellable), r (reserved), d (damaged),
  p (return_pending), t (in_transit);
- `hold:{SKU}` sorted set reservation id -> expires_at (ms): the exact expiry index;
- `part:{SKU}` hash reservation id -> this SKU's lines of it;
- `avail:{SKU}` hash `LOC` -> sellable - reserved (not clamped) for every location with any bucket: the
  availability summary, changed by every script that changes a sellable or reserved bucket, in the same
  call, so that availability reads it instead of walking the buckets (and clamps it at 0);
- `avail:{SKU}:ready` string `NEXT|JSON`: the SKU's availability answer as the available or reserve script
  last wrote it (JSON: location -> available, clamped), NEXT the earliest expiry in `hold:{SKU}` then (''
  without holds). Every change of `avail:{SKU}` (and a hold put back or moved earlier) deletes it in the
  same call, except a reservation's, which writes its new counts (and its hold's expiry, when earlier) into
  the answers of the SKUs it took from in the same call, so on one node an
  availability read is EXISTS of the marker and one MGET, no script, while every SKU's answer is there
  and its NEXT is not due (otherwise the script prunes and writes it again);
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

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

import service.stock.demand as demand
import service.stock.ledger as ledger
from service.db.engine import create_engine
from service.db.sqlite_writer import SqliteWriters
from service.settings import DatabaseSettings
from service.stock.cluster import ClusterScripts, is_cluster_url, open_cluster, slot_tags
from service.stock.crossslot import CrossSlot
from service.stock.journal import Entry, Journal
from service.stock.memory import Clock, utc_now
from service.stock.redis_base import DOWN_ERRORS as DOWN_ERRORS  # part of this module's interface
from service.stock.redis_base import Recovery as Recovery
from service.stock.redis_layout import (
    AVAILABLE_DECODER,
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
from service.stock.redis_ledger import RedisLedger
from service.stock.sql_rows import read_exceptions
from service.stock.store import (
    AvailableView,
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
    StockException,
    StockUnavailable,
)
from service.stock.wire import ScriptClient

# ready answers whose decoded form a store keeps (about 2 kB each for 20 locations) before it starts over
READY_KEPT = 2048
READY_DECODER = msgspec.json.Decoder(dict[str, int])


class RedisStockStore(RedisLedger):
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
        # ready answer text -> (its NEXT, or None; location -> available): a SKU's answer is read again and
        # again while its stock is unchanged, and an unchanged text decodes to the same (read only) map
        self._ready_decoded: dict[bytes, tuple[float | None, AvailableView]] = {}
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
        read = self.keys.read_keys(skus)
        now = self._now_ms()
        ready: Sequence[dict[str, int]] | None = await self._ready(read.ready, now)
        if ready is None:
            ready = AVAILABLE_DECODER.decode(await self._call(self._available, read.keys, [now]))
        return dict(zip(read.unique, ready, strict=True))

    async def _ready(self, command: tuple[bytes, bytes], now: int) -> list[AvailableView] | None:
        """The SKUs' ready availability answers (one round trip, no script), or None when one is missing
        or its earliest hold is due at `now` (the available script then prunes and writes them again)."""
        try:
            marker, texts = await cast(ScriptClient, self.scripts).commands(command)
        except DOWN_ERRORS as error:
            raise self._down(error) from error
        if not marker:
            raise self._lost()
        decoded = self._ready_decoded
        answers: list[AvailableView] = []
        for ready in texts:
            if ready is None:
                return None
            found = decoded.get(ready)
            if found is None:
                due, _, body = ready.partition(b"|")
                found = (float(due) if due else None, AvailableView(READY_DECODER.decode(body)))
                if len(decoded) >= READY_KEPT:
                    decoded.clear()
                decoded[ready] = found
            if found[0] is not None and found[0] <= now:
                return None
            answers.append(found[1])
        return answers

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
        short: tuple[ShortLine, ...] = ()
        if flat_short:  # a grant in full (the usual answer) has none
            short = tuple(
                ShortLine(
                    text(flat_short[i]),
                    text(flat_short[i + 1]),
                    int(flat_short[i + 2]),
                    int(flat_short[i + 3]),
                )
                for i in range(0, len(flat_short), 4)
            )
        if verdict == "short":
            seen = dict(zip(by_sku, AVAILABLE_DECODER.decode(outcome[2]), strict=True))
            return ReservationResult(None, short, available=seen)
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

    async def close(self) -> None:
        if self.recovery is not None:
            await self.recovery.close()
        await self.journal.close()
        await self.journal.engine.dispose()
        await self.scripts.close()
        await self.client.aclose()
        if not self.cluster:
            await self.client.connection_pool.disconnect()
