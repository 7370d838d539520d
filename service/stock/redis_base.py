"""The Redis stock store's connection to Redis and its state marker: script calls, the errors that mean
Redis is away or lost its data, and the marker's checks (the layout `service.stock.redis` documents)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, cast

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster

import service.stock.cluster as cluster
from service.stock.cluster import ClusterScripts
from service.stock.journal import Journal, latest_write
from service.stock.memory import Clock, utc_now
from service.stock.redis_layout import LAYOUT, Keys, Script, text, to_ms
from service.stock.store import StockStateLost, StockUnavailable
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


class RedisBase:
    """What every part of the Redis store shares: the clients, the journal, the key names and the clock
    (set by `service.stock.redis.RedisStockStore`), script calls and the state marker."""

    client: aioredis.Redis
    scripts: ScriptClient | ClusterScripts
    journal: Journal
    cluster: bool
    keys: Keys
    recovery: Recovery | None
    _clock: Clock
    _down_logged: float

    def now(self) -> datetime:
        return self._clock()

    def _now_ms(self) -> int:
        if self._clock is utc_now:  # the same milliseconds without making a datetime (a microsecond less)
            return time.time_ns() // 1_000_000
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
