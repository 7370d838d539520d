"""The Redis stock store on a Redis Cluster: slot tags, the script client and the cross-slot refusal.

A cluster is named by a `redis+cluster://host:port,host:port` URL (or `REDIS_CLUSTER_URLS`); any reachable
node is enough to start: redis-py's cluster client learns the slot map from it and carries every command
but the scripts, which `ClusterScripts` sends over one pipelined connection per primary (MOVED and a
failover reload the map and try again, ASK goes through the cluster client).

Keys on a cluster (prefix `rp:`):
- every key of a SKU carries the hash tag `{SKU}` (`stock:{SKU}`, `hold:{SKU}`, `part:{SKU}`), as on one
  node, so all of a SKU lives in one slot;
- the keys that are not per SKU exist once per slot, tagged with that slot's *slot tag* (the shortest
  base-36 string that hashes to the slot, `SlotTags`): the state marker `built:{T}`, the set of applied
  event ids `events:{T}`, the held reservations' index `holds:{T}` and the reservation itself
  `resv:{T}:HEX`, where T is the slot of the reservation's SKUs. A script therefore finds every key it
  lists in one slot: a single-SKU request is one script call on one node, with no extra round trip;
- a reservation's id is `HEX-T` (HEX from the idempotency key, as on one node, T its slot's tag), so that
  reading, committing or releasing it by id goes straight to its slot;
- `eid:{EVENT_ID}` holds the SKU of every applied event, written (SET NX GET) right after the events
  script, which dedupes within its slot (`events:{T}`): an event id first applied to a SKU on another slot
  is found there, the event is put back and answers as a duplicate, as on one node;
- `idem:{HEX}` holds the request fingerprint of every granted reservation, written once (SET NX GET)
  right after the grant: a key reused with another body whose SKUs live on another slot (and so would
  not meet the first reservation's record) is found there, the new reservation is taken back and the
  request answers as an idempotency conflict, as on one node;
- the rebuild lock `rebuilding` is a single key, used with single-key commands only.

A reservation whose SKUs live on more than one slot, or that counts against a day's capacity
(`capu:{DAY}` lives in the day's slot, never in the SKU's), is taken in steps under an intent in the
journal, with compensation and a recovery sweep (`service.stock.crossslot`). Reads, snapshots and events
are independent per SKU and run per slot. The recovery's "behind the journal" check (the marker's write
counter against the journal's) is one node's; on a cluster each slot counts its own writes and the check
is not made: a shard that comes back empty is still caught by its missing markers.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from service.stock.wire import ScriptClient

SCHEME = "redis+cluster"
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def is_cluster_url(url: str) -> bool:
    return url.startswith(f"{SCHEME}://")


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """The startup nodes, user and password of a `redis+cluster://[user:password@]h:p,h:p` URL."""
    parts = urlsplit(url)
    netloc = parts.netloc
    user = password = None
    if "@" in netloc:
        credentials, _, netloc = netloc.rpartition("@")
        name, _, secret = credentials.partition(":")
        user, password = unquote(name) or None, unquote(secret) or None
    nodes = []
    for item in netloc.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a cluster node must be host:port, not {item!r}")
        nodes.append((host.strip("[]"), int(port)))
    if not nodes:
        raise ValueError("a redis+cluster:// URL names at least one node")
    return nodes, user, password


def open_cluster(url: str, pool_size: int) -> RedisCluster:
    nodes, user, password = cluster_nodes(url)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        username=user,
        password=password,
        max_connections=pool_size,
        socket_connect_timeout=1,
        socket_timeout=5,
        # a node away: two more tries (the client reloads the slot map between them, which follows a
        # failover that is already done), then 503 with Retry-After; MOVED and ASK are followed apart
        retry=Retry(ExponentialBackoff(cap=0.25, base=0.05), 2),
    )


class SlotTags:
    """Per slot, the shortest base-36 string hashing to it (4 characters at most), and back."""

    def __init__(self) -> None:
        tags: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        missing, number = REDIS_CLUSTER_HASH_SLOTS, 0
        while missing:
            tag = _base36(number)
            slot = key_slot(tag.encode())
            if tags[slot] is None:
                tags[slot] = tag
                missing -= 1
            number += 1
        self.tags: tuple[str, ...] = tuple(t for t in tags if t is not None)

    def of_sku(self, sku: str) -> str:
        """The tag of the slot the SKU's keys (`{SKU}`) live in."""
        return self.tags[key_slot(sku.encode())]

    def valid(self, tag: str) -> bool:
        return bool(tag) and len(tag) <= 4 and self.tags[key_slot(tag.encode())] == tag


@functools.cache
def slot_tags() -> SlotTags:
    """The table, computed once per process on first use (about 0.1 s): it is a fixed property of the
    cluster's hash function, the same for every store, and never changes once built."""
    return SlotTags()


def _base36(number: int) -> str:
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = _DIGITS[digit] + text
        if not number:
            return text


class ClusterScripts:
    """The store's script calls on a cluster: per primary, one pipelined script connection (the
    `ScriptClient` a single node uses, so a worker keeps its speed per node), chosen by the slot of the
    script's keys (all in one slot) from the cluster client's slot map.

    A MOVED reply (slots moved, a replica promoted) reloads the map and tries again on the new owner; a
    connection that fails reloads it too (a failover), up to `ATTEMPTS` tries in all; an ASK reply (a slot
    being migrated) sends that one call through redis-py's cluster client, which follows it. CLUSTERDOWN
    and TRYAGAIN read as redis-py's cluster errors (the store answers 503)."""

    ATTEMPTS = 3

    def __init__(self, client: RedisCluster, url: str) -> None:
        self.client = client
        _, self._user, self._password = cluster_nodes(url)
        self._per_node: dict[str, ScriptClient] = {}
        self.on_connect: Callable[[], Awaitable[None]] | None = None  # one node's check; not run here

    async def evalsha(self, sha: str, script: str, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        slot = key_slot(_bytes(keys[0]))
        for attempt in range(1, self.ATTEMPTS + 1):
            scripts = await self._scripts_for(slot)
            try:
                return await scripts.evalsha(sha, script, keys, args)
            except redis_errors.ResponseError as error:
                message = str(error)
                if message.startswith("MOVED") and attempt < self.ATTEMPTS:
                    await self.client.nodes_manager.initialize()
                    continue
                if message.startswith("ASK"):
                    return await self._through_cluster_client(sha, script, keys, args)
                if message.startswith("CLUSTERDOWN"):
                    raise redis_errors.ClusterDownError(message) from error
                if message.startswith("TRYAGAIN"):
                    raise redis_errors.TryAgainError(message) from error
                raise
            except (redis_errors.ConnectionError, redis_errors.TimeoutError):
                if attempt == self.ATTEMPTS:
                    raise
                await self.client.nodes_manager.initialize()
        raise redis_errors.ClusterError("the slot kept moving")  # every attempt was MOVED

    async def _through_cluster_client(
        self, sha: str, script: str, keys: Sequence[Any], args: Sequence[Any]
    ) -> Any:
        try:
            return await self.client.evalsha(sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            return await self.client.eval(script, len(keys), *keys, *args)

    async def _scripts_for(self, slot: int) -> ScriptClient:
        await self.client.initialize()
        nodes = self.client.nodes_manager.slots_cache.get(slot)
        if not nodes:
            raise redis_errors.SlotNotCoveredError(f"no node serves slot {slot}")
        node = nodes[0]
        found = self._per_node.get(node.name)
        if found is None:
            credentials = ""
            if self._password is not None:
                credentials = f"{quote(self._user or '', safe='')}:{quote(self._password, safe='')}@"
            url = f"redis://{credentials}{node.host}:{node.port}/0"
            found = self._per_node[node.name] = ScriptClient(url, connect_timeout=1, reply_timeout=5)
        return found

    async def connected(self) -> None:
        """Connections open per node on first use; there is nothing to open ahead."""

    async def close(self) -> None:
        for scripts in self._per_node.values():
            await scripts.close()
        self._per_node.clear()


# Per node, many keys of many slots in one call: the keys of every slot one node serves (the markers, a
# wipe's keys) would be thousands of commands through the cluster client's pipeline, seconds of client
# time. A script flagged `allow-cross-slot-keys` (Redis 7) may touch the keys of any slot its node serves;
# it is sent to each primary with the keys that node holds, as arguments.
_UNLINK_ON_NODE = """#!lua flags=allow-cross-slot-keys
local n = 0
for _, key in ipairs(ARGV) do n = n + redis.call('UNLINK', key) end
return n"""
_HSET_ON_NODE = """#!lua flags=allow-cross-slot-keys
local count = tonumber(ARGV[1])
for i = count * 2 + 2, #ARGV do
  for f = 2, count * 2, 2 do redis.call('HSET', ARGV[i], ARGV[f], ARGV[f + 1]) end
end
return #ARGV - count * 2 - 1"""
_BATCH = 2000


async def keys_by_node(
    client: RedisCluster, keys: Sequence[Any], slots: Sequence[int] | None = None
) -> dict[str, list[Any]]:
    """The keys grouped by the name of the primary that serves their slot (`slots`: theirs, when known)."""
    await client.initialize()
    cache = client.nodes_manager.slots_cache
    grouped: dict[str, list[Any]] = {}
    for i, key in enumerate(keys):
        nodes = cache.get(key_slot(_bytes(key)) if slots is None else slots[i])
        if not nodes:
            raise redis_errors.ConnectionError(f"no node serves the slot of {key!r}")
        grouped.setdefault(nodes[0].name, []).append(key)
    return grouped


def first_slots(client: RedisCluster) -> list[int]:
    """One slot of every primary (the lowest it serves), from the client's slot map."""
    cache = client.nodes_manager.slots_cache
    first: dict[str, int] = {}
    for slot in range(REDIS_CLUSTER_HASH_SLOTS):
        nodes = cache.get(slot)
        if nodes and nodes[0].name not in first:
            first[nodes[0].name] = slot
    return list(first.values())


def _bytes(key: Any) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode()


async def unlink_on_nodes(
    client: RedisCluster, keys: Sequence[Any], slots: Sequence[int] | None = None
) -> int:
    deleted = 0
    for name, group in (await keys_by_node(client, keys, slots)).items():
        node = client.get_node(node_name=name)
        for start in range(0, len(group), _BATCH):
            batch = group[start : start + _BATCH]
            deleted += int(
                await client.execute_command("EVAL", _UNLINK_ON_NODE, 0, *batch, target_nodes=node)
            )
    return deleted


async def hset_on_nodes(
    client: RedisCluster, keys: Sequence[str], mapping: dict[str, Any], slots: Sequence[int] | None = None
) -> None:
    """HSET the same fields on every key."""
    fields = [x for pair in mapping.items() for x in pair]
    for name, group in (await keys_by_node(client, keys, slots)).items():
        node = client.get_node(node_name=name)
        for start in range(0, len(group), _BATCH):
            batch = group[start : start + _BATCH]
            await client.execute_command(
                "EVAL", _HSET_ON_NODE, 0, len(mapping), *fields, *batch, target_nodes=node
            )
