"""The Redis store rebuilds itself from the journal when its state marker is missing.

Redis can come back without its data (a restart without persistence, a flush, a failover to an empty
replica), or with older data (a restart from a snapshot, a lagging replica: `RedisStockStore.check_behind`
finds its marker behind the journal and deletes it). Every stock script then finds the marker
(`Keys.built`) missing and refuses, so requests get 503 with Retry-After instead of "insufficient stock",
and the worker that met the refusal wakes its `StockRecovery`. One worker at a time rebuilds, across
processes and hosts: the one that takes the `rebuilding` lock (SET NX PX with a random token, renewed
while it works, released only by its holder). It waits for its own process's journal writes under way,
rebuilds, checks that the journal did not grow meanwhile (a change another process applied before the
loss and journaled late) nor had days folded into its checkpoint (it rebuilds again if so) and writes the marker with the journal position it
read, in one script that first checks it still holds the lock. Every other worker waits and re-checks
the marker until it is back, and takes over if the rebuilder's lock lapses without a marker. A new
deployment starts the same way: its empty journal gives an empty store and the marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Literal

from redis import exceptions as redis_errors

from service.db.sqlite_writer import SqliteWriters
from service.stock.checkpoint import journal_extent
from service.stock.memory import Clock, utc_now
from service.stock.rebuild import RebuildReport, replay_journal
from service.stock.redis import DOWN_ERRORS, RedisStockStore
from service.stock.redis_layout import LAYOUT, to_ms
from service.stock.store import StockUnavailable

log = logging.getLogger("retail_policy.stock")

LOCK_MS = 30_000  # the lock lapses this long after its holder stopped renewing it
RENEW_SECONDS = LOCK_MS / 1000 / 3
POLL_SECONDS = 0.2  # how often a waiting worker re-checks the marker and the lock
RETRY_SECONDS = 1.0  # after a failed attempt (Redis or the journal away)
JOURNAL_SETTLE_SECONDS = 30.0  # the journal's own write timeout: an append under way ends by then
PASSES = 5  # rebuilds in a row while the journal keeps growing (late entries of changes made before the loss)

_RENEW = """if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0"""
_RELEASE = """if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0"""
_MARK = """if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'journal', ARGV[2], 'at', ARGV[3], 'n', ARGV[4], 'layout', ARGV[5])
return 1"""

State = Literal["ok", "rebuilding", "down"]


class LockLost(Exception):
    """The rebuild's lock lapsed (the process stalled longer than LOCK_MS): another worker may rebuild."""


class StockRecovery:
    """Keeps one Redis store's state marker: rebuilds from the journal when it is missing."""

    def __init__(self, store: RedisStockStore) -> None:
        self.store = store
        self.state: State = "ok"
        self._task: asyncio.Task[None] | None = None
        store.recovery = self

    async def start(self, wait_seconds: float) -> None:
        """Check the marker once (and against the journal); when it is missing, recover and wait up to
        `wait_seconds` for it."""
        await self.store.check_behind()
        try:
            if await self.store.has_marker():
                await self._recover_intents()
                return
        except StockUnavailable:
            self.state = "down"  # the first call that finds Redis back checks the marker
            return
        self.wake()
        task = self._task
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), wait_seconds)

    async def _recover_intents(self) -> None:
        """On a cluster, resolve the cross-slot intents left by workers that stopped (see
        `service.stock.crossslot`); the periodic sweep does it again."""
        if self.store.cross is None:
            return
        try:
            await self.store.cross.recover_due()
        except Exception as error:  # the database or a node away: the next sweep tries again
            log.warning("cross-slot intents not recovered at start: %s: %s", type(error).__name__, error)

    def wake(self) -> None:
        """Recover in the background unless already doing so (called whenever a call finds no marker)."""
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            self.state = "rebuilding"
            self._task = asyncio.create_task(self._recover(), name="stock-recovery")

    async def rebuild_now(self, wait_seconds: float = 600.0) -> RebuildReport:
        """Rebuild even though the marker is there (`retail-policy stock rebuild`): take the lock (waiting
        up to `wait_seconds` for another rebuilder), remove the marker so that every worker answers 503
        meanwhile, rebuild, write the marker."""
        async with asyncio.timeout(wait_seconds):
            while True:
                report = await self._rebuild_under_lock(force=True)
                if report is not None:
                    return report
                await asyncio.sleep(POLL_SECONDS)

    async def _recover(self) -> None:
        while True:
            try:
                if await self.store.has_marker():
                    self.state = "ok"
                    return
                self.state = "rebuilding"
                if await self._rebuild_under_lock(force=False) is not None:
                    self.state = "ok"
                    return
                # another worker holds the lock: wait and look again
                await asyncio.sleep(POLL_SECONDS)
                continue
            except (StockUnavailable, LockLost, *DOWN_ERRORS) as error:
                self.state = "rebuilding" if isinstance(error, LockLost) else "down"
                log.warning("stock rebuild interrupted, trying again: %s: %s", type(error).__name__, error)
            except Exception:  # a background task must not die silently: log it and try again
                log.exception("stock rebuild failed, trying again")
            await asyncio.sleep(RETRY_SECONDS)

    async def _rebuild_under_lock(self, force: bool) -> RebuildReport | None:
        """Rebuild when this worker gets the lock; None when another worker holds it (or, unless `force`,
        the marker is back)."""
        store, client, keys = self.store, self.store.client, self.store.keys
        token = secrets.token_hex(16)
        if not await client.set(keys.rebuilding, token, nx=True, px=LOCK_MS):
            return None
        lost = asyncio.Event()
        renewal = asyncio.create_task(self._renew(token, lost), name="stock-recovery-lock")

        def fence() -> None:
            if lost.is_set():
                raise LockLost("the stock rebuild lock lapsed")

        try:
            if force:
                await store.drop_markers()
            elif await store.has_marker():  # rebuilt by another worker between the check and the lock
                return None
            log.warning("stock state marker missing: rebuilding Redis from the journal")
            try:
                async with asyncio.timeout(JOURNAL_SETTLE_SECONDS):
                    await store.journal.settled()
            except TimeoutError:
                log.warning(
                    "journal writes still under way after %.0f s; rebuilding anyway", JOURNAL_SETTLE_SECONDS
                )
            for _ in range(PASSES):
                report = await replay_journal(store, fence=fence)
                extent = await journal_extent(store.journal.engine)
                if extent == (report.generation, report.journal_entries):
                    break
                log.warning("the journal grew during the rebuild: rebuilding again")
            fence()
            if store.cluster:
                marked = await self._mark_cluster(token, report)
            else:
                marked = await client.eval(
                    _MARK,
                    2,
                    keys.rebuilding,
                    keys.built,
                    token,
                    report.journal_position,
                    to_ms(store.now()),
                    report.writes,
                    LAYOUT,
                )
            if not marked:
                raise LockLost("the stock rebuild lock lapsed before the marker was written")
            log.warning(
                "stock rebuilt from %d journal entries and %d checkpointed (position %d): %d positions, "
                "%d held reservations",
                report.journal_entries,
                report.checkpoint_entries,
                report.journal_position,
                report.positions,
                report.reservations_held,
            )
            return report
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError, redis_errors.RedisError, *DOWN_ERRORS):
                await renewal
            with contextlib.suppress(redis_errors.RedisError, *DOWN_ERRORS):
                await client.eval(_RELEASE, 1, keys.rebuilding, token)

    async def _mark_cluster(self, token: str, report: RebuildReport) -> bool:
        """On a cluster, one marker per slot: written (one script per node) only while this
        worker still holds the lock. The lock and the markers live on different slots, so the check comes
        just before the writes rather than in the same script; the fence and the lock's lapse time
        (LOCK_MS, renewed every RENEW_SECONDS) leave a rebuilder far more time than the writes take."""
        store = self.store
        held = await store.client.get(store.keys.rebuilding)
        if held not in (token, token.encode()):
            return False
        await store.write_markers(
            {
                "journal": report.journal_position,
                "at": to_ms(store.now()),
                "n": report.writes,
                "layout": LAYOUT,
            }
        )
        return True

    async def _renew(self, token: str, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                renewed = await self.store.client.eval(_RENEW, 1, self.store.keys.rebuilding, token, LOCK_MS)
            except (redis_errors.RedisError, *DOWN_ERRORS):
                continue  # the next renewal may get through; the lock lasts LOCK_MS
            if not renewed:
                lost.set()
                return

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def open_recovering(
    redis_url: str,
    journal_url: str,
    *,
    pool_size: int = 64,
    clock: Clock = utc_now,
    prefix: str = "rp:",
    recover_wait_seconds: float = 30.0,
    sqlite_writers: SqliteWriters | None = None,
) -> RedisStockStore:
    """A Redis store (`RedisStockStore.open`) that rebuilds itself from the journal whenever its state
    marker is missing; opening waits up to `recover_wait_seconds` for that (a new deployment: the empty
    journal gives an empty store and its marker; Redis down: no wait, the first call that finds it back
    checks)."""
    store = await RedisStockStore.open(
        redis_url, journal_url, pool_size=pool_size, clock=clock, prefix=prefix, sqlite_writers=sqlite_writers
    )
    await StockRecovery(store).start(recover_wait_seconds)
    return store


async def rebuild_redis(store: RedisStockStore) -> RebuildReport:
    """Rebuild now even though the marker may be there (what `retail-policy stock rebuild` runs): under
    the rebuild lock, with the marker removed meanwhile and written back at the end."""
    recovery = store.recovery if isinstance(store.recovery, StockRecovery) else StockRecovery(store)
    return await recovery.rebuild_now()
