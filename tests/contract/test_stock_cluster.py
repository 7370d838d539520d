"""What the Redis store on a Redis Cluster adds to the contract: where its keys live, orders across slots
(intents, compensation, recovery), what holds across slots, and a shard that lost its data."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from typing import cast

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from sqlalchemy import text

from service.stock.recovery import rebuild_redis
from service.stock.redis import RedisStockStore
from service.stock.store import (
    CapacityClaim,
    CapacityLimit,
    IdempotencyConflict,
    Levels,
    ReservationLine,
    ReservationRequest,
    ReservationStateError,
    ShortLine,
    SnapshotRow,
    StockEvent,
    StockStateLost,
    StockUnavailable,
)
from tests.contract.stock_backends import FakeClock, open_backend


@pytest.fixture(params=["redis-cluster", "redis-cluster+postgresql"])
async def store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[RedisStockStore]:
    """The cluster store, its journal (and intents) in SQLite or in PostgreSQL."""
    async with open_backend(request.param, request, clock) as opened:
        assert isinstance(opened, RedisStockStore)
        yield opened


def two_slots() -> tuple[str, str]:
    """Two SKUs whose keys live on different slots."""
    first = "SKU-A"
    other = next(f"SKU-{i}" for i in range(100) if key_slot(f"SKU-{i}".encode()) != key_slot(first.encode()))
    return first, other


async def summary(store: RedisStockStore, *skus: str) -> dict[str, dict[str, int]]:
    """The availability summary `avail:{SKU}` as the scripts left it (read raw: not clamped, nothing
    pruned), to compare with sellable - reserved."""
    found = {}
    for sku in skus:
        raw = await store.client.hgetall(store.keys.avail(sku))
        found[sku] = {k.decode(): int(v) for k, v in raw.items()}
    return found


def ask(key: str, *lines: tuple[str, str, int], claim: CapacityClaim | None = None) -> ReservationRequest:
    return ReservationRequest(
        "o1", "web", key, tuple(ReservationLine(s, loc, q) for s, loc, q in lines), 600, capacity=claim
    )


async def test_every_key_of_a_single_sku_reservation_lives_in_the_skus_slot(store: RedisStockStore) -> None:
    await store.put_snapshot([SnapshotRow("SKU-A", "S1", 5)])
    held = (await store.reserve(ask("k1", ("SKU-A", "S1", 2)))).reservation
    assert held is not None
    slot = key_slot(b"SKU-A")
    tag = store.keys.home(held.id)
    assert tag is not None
    keys = [store.keys.reservation(held.id), store.keys.holds_at(tag), store.keys.built_at(tag)]
    keys += [store.keys.events_at(tag), *store.keys.sku_keys("SKU-A")]
    assert {key_slot(key.encode()) for key in keys} == {slot}
    assert await store.client.exists(store.keys.reservation(held.id), store.keys.built_at(tag)) == 2


async def intents_open(store: RedisStockStore) -> int:
    assert store.cross is not None
    async with store.journal.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM stock_intents"))).scalar_one())


async def test_a_cross_slot_reservation_is_all_or_nothing_and_leaves_no_intent(
    store: RedisStockStore,
) -> None:
    first, other = two_slots()
    await store.put_snapshot([SnapshotRow(first, "S1", 5), SnapshotRow(other, "S1", 1)])
    # the second slot is short: what the first slot's step took is given back before the answer
    refused = await store.reserve(ask("k1", (first, "S1", 2), (other, "S1", 2)))
    assert not refused.granted
    assert refused.short == (ShortLine(other, "S1", 2, 1),)
    assert await store.get_available([first, other]) == {first: {"S1": 5}, other: {"S1": 1}}
    held = (await store.reserve(ask("k2", (first, "S1", 2), (other, "S1", 1)))).reservation
    assert held is not None and held.id.endswith(f"-x-{store.keys.tag(first)}")
    assert await store.get_available([first, other]) == {first: {"S1": 3}, other: {"S1": 0}}
    replay = await store.reserve(ask("k2", (first, "S1", 2), (other, "S1", 1)))
    assert replay.replayed and replay.reservation == held
    with pytest.raises(IdempotencyConflict):
        await store.reserve(ask("k2", (first, "S1", 1), (other, "S1", 1)))
    assert await store.get_available([first, other]) == {first: {"S1": 3}, other: {"S1": 0}}
    assert await intents_open(store) == 0
    await store.commit(held.id)
    assert await store.get_levels([first, other]) == {
        first: {"S1": Levels(sellable=3)},
        other: {"S1": Levels(sellable=0)},
    }
    assert await intents_open(store) == 0


async def test_a_cross_slot_capacity_claim_is_counted_with_its_stock_and_given_back_with_it(
    store: RedisStockStore, clock: FakeClock
) -> None:
    first, other = two_slots()
    await store.put_snapshot([SnapshotRow(first, "S1", 5), SnapshotRow(other, "S1", 5)])
    claim = CapacityClaim("2026-03-01", (CapacityLimit("S1", 4),))
    held = (await store.reserve(ask("k1", (first, "S1", 1), (other, "S1", 2), claim=claim))).reservation
    assert held is not None
    assert await store.get_capacity_used("2026-03-01", ["S1"]) == {"S1": 3}
    # capacity left for one unit: the order is refused and its claim given back with its stock
    refused = await store.reserve(ask("k2", (first, "S1", 1), (other, "S1", 1), claim=claim))
    assert refused.short == (ShortLine(other, "S1", 1, 0),)
    assert await store.get_capacity_used("2026-03-01", ["S1"]) == {"S1": 3}
    assert await store.get_available([first, other]) == {first: {"S1": 4}, other: {"S1": 3}}
    await store.release(held.id)
    assert await store.get_capacity_used("2026-03-01", ["S1"]) == {"S1": 0}
    assert await store.get_available([first, other]) == {first: {"S1": 5}, other: {"S1": 5}}
    expiring = (await store.reserve(ask("k3", (first, "S1", 2), (other, "S1", 2), claim=claim))).reservation
    assert expiring is not None
    clock.advance(601)
    assert await store.get_capacity_used("2026-03-01", ["S1"]) == {"S1": 0}
    assert await store.get_available([first, other]) == {first: {"S1": 5}, other: {"S1": 5}}
    assert await intents_open(store) == 0


async def test_a_key_reused_with_a_body_on_another_slot_is_a_conflict_and_takes_nothing(
    store: RedisStockStore,
) -> None:
    first, other = two_slots()
    await store.put_snapshot([SnapshotRow(first, "S1", 5), SnapshotRow(other, "S1", 5)])
    assert (await store.reserve(ask("k1", (first, "S1", 2)))).reservation is not None
    with pytest.raises(IdempotencyConflict):
        await store.reserve(ask("k1", (other, "S1", 2)))
    assert (await store.get_available([other])) == {other: {"S1": 5}}
    replay = await store.reserve(ask("k1", (first, "S1", 2)))
    assert replay.replayed


async def test_reads_snapshots_and_events_across_slots_answer_every_sku(store: RedisStockStore) -> None:
    first, other = two_slots()
    await store.put_snapshot([SnapshotRow(first, "S1", 5), SnapshotRow(other, "S2", 7)])
    results = await store.apply_events(
        [StockEvent("e1", "receipt", other, "S2", 1), StockEvent("e2", "receipt", first, "S1", 2)]
    )
    assert [r.status for r in results] == ["applied", "applied"]
    assert await store.get_available([other, first, other]) == {other: {"S2": 8}, first: {"S1": 7}}


async def test_rebuild_after_a_wipe_brings_back_levels_holds_event_ids_and_idempotency_keys(
    store: RedisStockStore,
) -> None:
    first, other = two_slots()
    await store.put_snapshot([SnapshotRow(first, "S1", 5), SnapshotRow(other, "S1", 5)])
    await store.apply_events([StockEvent("e1", "receipt", first, "S1", 1)])
    held = (await store.reserve(ask("k1", (first, "S1", 2)))).reservation
    assert held is not None
    before = await store.get_levels([first, other])
    await store.wipe()
    with pytest.raises(StockStateLost):
        await store.get_levels([first])
    await rebuild_redis(store)
    assert await store.get_levels([first, other]) == before
    assert await store.get_reservation(held.id) == held
    [again] = await store.apply_events([StockEvent("e1", "receipt", other, "S1", 1)])
    assert again.status == "duplicate"
    with pytest.raises(IdempotencyConflict):
        await store.reserve(ask("k1", (other, "S1", 2)))
    await store.release(held.id)
    assert await store.get_available([first]) == {first: {"S1": 6}}


async def test_a_shard_that_lost_its_data_refuses_then_the_store_rebuilds_it(
    store: RedisStockStore, request: pytest.FixtureRequest
) -> None:
    await store.put_snapshot([SnapshotRow("SKU-A", "S1", 5)])
    held = (await store.reserve(ask("k1", ("SKU-A", "S1", 2)))).reservation
    assert held is not None
    # the primary serving SKU-A comes back empty (a restart without persistence)
    serving = cast(RedisCluster, store.client).get_node_from_key(store.keys.stock("SKU-A"))
    assert serving is not None and serving.port in request.getfixturevalue("redis_cluster_ports")
    node = aioredis.Redis(host=serving.host, port=serving.port)
    await node.flushall()
    await node.aclose()
    with pytest.raises(StockStateLost):
        await store.get_available(["SKU-A"])
    assert store.recovery is not None
    await rebuild_redis(store)
    assert await store.get_available(["SKU-A"]) == {"SKU-A": {"S1": 3}}
    assert await store.get_reservation(held.id) == held


async def test_a_shard_down_answers_unavailable_and_back_empty_is_rebuilt(
    request: pytest.FixtureRequest, clock: FakeClock
) -> None:
    """On a cluster of the test's own: the primary of a SKU's slot killed (503s, not errors), then started
    again on its port with its cluster config and no data (the store rebuilds from the journal)."""
    from tests.redis_cluster import cluster_url, local_cluster, wait_cluster_ok

    nodes: dict[int, subprocess.Popen[bytes]] = {}
    with local_cluster(nodes) as ports:
        async with open_backend("redis-cluster", request, clock, cluster_url(ports)) as opened:
            assert isinstance(opened, RedisStockStore)
            await opened.put_snapshot([SnapshotRow("SKU-A", "S1", 5)])
            held = (await opened.reserve(ask("k1", ("SKU-A", "S1", 1)))).reservation
            serving = cast(RedisCluster, opened.client).get_node_from_key(opened.keys.stock("SKU-A"))
            assert serving is not None
            killed = nodes[serving.port]
            killed.kill()
            await asyncio.to_thread(killed.wait, 10)
            with pytest.raises(StockUnavailable):
                await opened.get_available(["SKU-A"])
            with pytest.raises(StockUnavailable):
                await opened.reserve(ask("k2", ("SKU-A", "S1", 1)))
            # the same command: its port, its cluster config file (so it rejoins as itself), no data
            restarted = await asyncio.to_thread(
                subprocess.Popen, killed.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                await asyncio.to_thread(wait_cluster_ok, ports)
                with pytest.raises(StockStateLost):
                    await opened.get_available(["SKU-A"])
                await rebuild_redis(opened)
                assert await opened.get_available(["SKU-A"]) == {"SKU-A": {"S1": 4}}
                assert held is not None and await opened.get_reservation(held.id) == held
            finally:
                restarted.terminate()
                await asyncio.to_thread(restarted.wait, 10)


async def _move_slot(ports: list[int], slot: int, source: int, target: int, finish: bool) -> None:
    """Migrate a slot's keys from one primary to another (as `redis-cli --cluster reshard` does); with
    `finish`, hand the slot over too, otherwise leave it migrating (its keys already on the target)."""
    nodes = {port: aioredis.Redis(host="127.0.0.1", port=port) for port in ports}
    try:
        ids = {
            port: (await client.execute_command("CLUSTER", "MYID")).decode() for port, client in nodes.items()
        }
        await nodes[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        await nodes[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        keys = await nodes[source].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        if keys:
            await nodes[source].execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
        if finish:
            for client in nodes.values():
                await client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    finally:
        for client in nodes.values():
            await client.aclose()


async def test_scripts_follow_a_slot_moved_to_another_primary_and_one_being_migrated(
    request: pytest.FixtureRequest, clock: FakeClock
) -> None:
    """On a cluster of the test's own: the SKU's slot is moved while the store holds a connection to its
    old primary (MOVED: the map is reloaded), then migrated again, its keys moved but the slot not yet
    handed over (ASK), then handed over."""
    from tests.redis_cluster import cluster_url, local_cluster

    with local_cluster() as ports:
        async with open_backend("redis-cluster", request, clock, cluster_url(ports)) as opened:
            assert isinstance(opened, RedisStockStore)
            await opened.put_snapshot([SnapshotRow("SKU-A", "S1", 5)])
            assert (await opened.reserve(ask("k1", ("SKU-A", "S1", 1)))).reservation is not None
            slot = key_slot(b"SKU-A")
            serving = cast(RedisCluster, opened.client).get_node_from_key(opened.keys.stock("SKU-A"))
            assert serving is not None
            others = [port for port in ports if port != serving.port]
            await _move_slot(ports, slot, serving.port, others[0], finish=True)
            assert (await opened.reserve(ask("k2", ("SKU-A", "S1", 1)))).reservation is not None
            await _move_slot(ports, slot, others[0], others[1], finish=False)
            # every key the read names is on the new primary already: ASK, and it is served there
            assert await opened.get_available(["SKU-A"]) == {"SKU-A": {"S1": 3}}
            # a new reservation's record is not on either yet: Redis answers TRYAGAIN until the slot is
            # handed over, so the store answers 503 and nothing changes
            with pytest.raises(StockUnavailable):
                await opened.reserve(ask("k3", ("SKU-A", "S1", 1)))
            await _move_slot(ports, slot, others[0], others[1], finish=True)
            assert (await opened.reserve(ask("k3", ("SKU-A", "S1", 1)))).reservation is not None
            assert await opened.get_available(["SKU-A"]) == {"SKU-A": {"S1": 2}}


async def test_concurrent_retries_of_a_cross_slot_order_take_it_once(store: RedisStockStore) -> None:
    first, other = two_slots()
    await store.put_snapshot([SnapshotRow(first, "S1", 5), SnapshotRow(other, "S1", 5)])
    request = ask("k1", (first, "S1", 1), (other, "S1", 1))
    results = await asyncio.gather(*(store.reserve(request) for _ in range(4)))
    assert len({r.reservation.id for r in results if r.reservation is not None}) == 1
    assert sorted(r.replayed for r in results) == [False, True, True, True]
    assert await store.get_available([first, other]) == {first: {"S1": 4}, other: {"S1": 4}}


async def test_an_order_whose_journal_entry_failed_is_completed_by_the_recovery(
    store: RedisStockStore, clock: FakeClock
) -> None:
    """The database goes away after every step and the seal: the order is whole in Redis, its intent
    stays open (given up to the recovery), and the recovery journals it once the database is back."""
    from tests.contract.test_stock_journal import journal_offline

    first, other = two_slots()
    await store.put_snapshot([SnapshotRow(first, "S1", 5), SnapshotRow(other, "S1", 5)])
    claim = CapacityClaim("2026-03-01", (CapacityLimit("S1", 10),))
    request = ask("k1", (first, "S1", 1), (other, "S1", 2), claim=claim)
    await journal_offline(store, True)
    with pytest.raises(StockUnavailable):
        await store.reserve(request)
    await journal_offline(store, False)
    assert await intents_open(store) == 1
    assert store.cross is not None
    assert await store.cross.recover_due() == 1
    assert await intents_open(store) == 0
    replay = await store.reserve(request)
    assert replay.replayed and replay.reservation is not None
    # the journal holds it: a rebuild from the journal alone gives the same state
    before = (await store.get_levels([first, other]), await store.get_capacity_used("2026-03-01", ["S1"]))
    await rebuild_redis(store)
    after = (await store.get_levels([first, other]), await store.get_capacity_used("2026-03-01", ["S1"]))
    assert (
        after
        == before
        == (
            {first: {"S1": Levels(sellable=5, reserved=1)}, other: {"S1": Levels(sellable=5, reserved=2)}},
            {"S1": 3},
        )
    )
    assert await store.get_reservation(replay.reservation.id) == replay.reservation


async def test_a_cross_slot_commit_keeps_its_capacity_and_a_late_commit_after_expiry_is_refused(
    store: RedisStockStore, clock: FakeClock
) -> None:
    first, other = two_slots()
    await store.put_snapshot([SnapshotRow(first, "S1", 5), SnapshotRow(other, "S1", 5)])
    claim = CapacityClaim("2026-03-01", (CapacityLimit("S1", 10),))
    kept = (await store.reserve(ask("k1", (first, "S1", 1), (other, "S1", 1), claim=claim))).reservation
    late = (await store.reserve(ask("k2", (first, "S1", 2), (other, "S1", 2), claim=claim))).reservation
    assert kept is not None and late is not None
    assert (await store.commit(kept.id)).status == "committed"
    assert (await store.commit(kept.id)).status == "committed"  # idempotent
    clock.advance(601)
    with pytest.raises(ReservationStateError):
        await store.commit(late.id)
    assert await store.get_capacity_used("2026-03-01", ["S1"]) == {"S1": 2}
    assert await store.get_levels([first, other]) == {
        sku: {"S1": Levels(sellable=4)} for sku in (first, other)
    }
    # the commit applied on both slots, the late one's parts pruned: the summary followed each step
    assert await summary(store, first, other) == {first: {"S1": 4}, other: {"S1": 4}}
    assert await intents_open(store) == 0


async def test_a_cross_slot_commit_whose_journal_entry_failed_is_rolled_forward_by_the_recovery(
    store: RedisStockStore,
) -> None:
    from tests.contract.test_stock_journal import journal_offline

    first, other = two_slots()
    await store.put_snapshot([SnapshotRow(first, "S1", 5), SnapshotRow(other, "S1", 5)])
    claim = CapacityClaim("2026-03-01", (CapacityLimit("S1", 10),))
    held = (await store.reserve(ask("k1", (first, "S1", 1), (other, "S1", 2), claim=claim))).reservation
    assert held is not None
    await journal_offline(store, True)
    with pytest.raises(StockUnavailable):
        await store.commit(held.id)
    await journal_offline(store, False)
    assert store.cross is not None and await store.cross.recover_due() == 1
    assert await intents_open(store) == 0
    committed = {first: {"S1": Levels(sellable=4)}, other: {"S1": Levels(sellable=3)}}
    assert await store.get_levels([first, other]) == committed
    # the recovery's roll-forward (apply on the other slot) kept the summary, before any rebuild
    assert await summary(store, first, other) == {first: {"S1": 4}, other: {"S1": 3}}
    assert await store.get_capacity_used("2026-03-01", ["S1"]) == {"S1": 3}
    # the journal holds the commit: a rebuild gives the same state
    await rebuild_redis(store)
    assert await store.get_levels([first, other]) == committed
    assert await store.get_capacity_used("2026-03-01", ["S1"]) == {"S1": 3}
    assert (await store.commit(held.id)).status == "committed"
