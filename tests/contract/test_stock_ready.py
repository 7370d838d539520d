"""Redis backend on one node: the ready availability answers (`avail:{SKU}:ready`). An availability read
of SKUs whose answers are there takes them without a script; every change drops the answer of the SKUs it
touches in the same call, but a reservation, which writes its counts into them; an answer whose earliest hold is due is not taken, so expiry stays exact; a
Redis without the state marker still refuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis

from service.stock.redis import RedisStockStore, reservation_id
from service.stock.redis_layout import to_ms
from service.stock.store import (
    AvailableView,
    ReservationLine,
    ReservationRequest,
    SnapshotRow,
    StockEvent,
    StockStateLost,
)
from tests.contract.stock_backends import FakeClock, open_backend


@pytest.fixture
async def store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[RedisStockStore]:
    async with open_backend("redis", request, clock) as opened:
        assert isinstance(opened, RedisStockStore)
        await opened.put_snapshot([SnapshotRow("SKU1", "S1", 5), SnapshotRow("SKU1", "S2", 4)])
        await opened.put_snapshot([SnapshotRow("SKU2", "S1", 7)])
        yield opened


def ask(key: str, qty: int = 2, ttl: int = 600, sku: str = "SKU1") -> ReservationRequest:
    return ReservationRequest("o1", "web", key, (ReservationLine(sku, "S1", qty),), ttl)


async def ready(store: RedisStockStore, sku: str) -> bytes | None:
    value: bytes | None = await store.client.get(store.keys.ready(sku))
    return value


async def test_a_read_leaves_each_sku_its_answer_and_the_next_read_takes_it(store: RedisStockStore) -> None:
    assert await ready(store, "SKU1") is None
    first = await store.get_available(["SKU1", "SKU2", "SKU1"])
    assert first == {"SKU1": {"S1": 5, "S2": 4}, "SKU2": {"S1": 7}}
    assert await ready(store, "SKU1") == b'|{"S1":5,"S2":4}'
    # the answer is what is read: a (never legitimate) edit of it shows that no script ran
    await store.client.set(store.keys.ready("SKU1"), b'|{"S1":1}')
    assert await store.get_available(["SKU1", "SKU2"]) == {"SKU1": {"S1": 1}, "SKU2": {"S1": 7}}


async def test_an_unchanged_answer_is_decoded_once_and_a_changed_one_again(store: RedisStockStore) -> None:
    await store.get_available(["SKU1", "SKU2"])  # leaves the answers
    first = await store.get_available(["SKU1", "SKU2"])
    again = await store.get_available(["SKU2", "SKU1"])
    assert again["SKU1"] is first["SKU1"] and again["SKU2"] is first["SKU2"]  # the same text, the same map
    assert isinstance(first["SKU1"], AvailableView)  # shared, so read only
    with pytest.raises(TypeError):
        first["SKU1"]["S1"] = 0
    taken = await store.reserve(ask("k1"))
    assert taken.granted
    after = await store.get_available(["SKU1", "SKU2"])
    assert after == {"SKU1": {"S1": 3, "S2": 4}, "SKU2": {"S1": 7}}
    assert after["SKU2"] is first["SKU2"] and first["SKU1"] == {"S1": 5, "S2": 4}


async def test_a_sku_without_stock_leaves_no_answer(store: RedisStockStore) -> None:
    assert await store.get_available(["NOPE"]) == {"NOPE": {}}
    assert await ready(store, "NOPE") is None


async def test_every_change_drops_or_rewrites_the_answer_of_the_skus_it_touches(
    store: RedisStockStore, clock: FakeClock
) -> None:
    async def read_then(change: object) -> None:
        await store.get_available(["SKU1", "SKU2"])
        assert await ready(store, "SKU1") is not None
        await change  # type: ignore[misc]
        assert await ready(store, "SKU1") is None, change
        assert await ready(store, "SKU2") is not None, change  # untouched SKU keeps its answer

    # a reservation writes the answers of the SKUs it took from again, with its hold as the earliest
    await store.get_available(["SKU1", "SKU2"])
    taken = await store.reserve(ask("k1"))
    assert taken.reservation is not None
    expires_ms = to_ms(taken.reservation.expires_at)
    assert await ready(store, "SKU1") == f'{expires_ms}|{{"S1":3,"S2":4}}'.encode()
    # and so does one refused (what it found, for the caller's next plan)
    assert not (await store.reserve(ask("k-short", qty=9))).granted
    assert await ready(store, "SKU1") == f'{expires_ms}|{{"S1":3,"S2":4}}'.encode()
    # a commit takes sellable and reserved down together: availability stays, and so may the answer (its
    # earliest hold, now gone, only makes a read at that time take the script once)
    await store.get_available(["SKU1"])
    await store.commit(reservation_id("k1"))
    assert await store.get_available(["SKU1"]) == {"SKU1": {"S1": 3, "S2": 4}}
    await store.reserve(ask("k2"))
    await read_then(store.release(reservation_id("k2")))
    await read_then(store.put_snapshot([SnapshotRow("SKU1", "S1", 9)]))
    await read_then(store.apply_events([StockEvent("e1", "sale", "SKU1", "S2", 1, clock.now)]))
    await read_then(store.apply_events([StockEvent("e2", "receipt", "SKU1", "S3", 2, clock.now)]))
    at = clock.now
    await read_then(store.apply_events([StockEvent("e3", "damage", "SKU1", "S1", 1, at)]))
    await read_then(store.apply_events([StockEvent("e4", "adjustment", "SKU1", "S1", 7, at)]))
    # a transfer lists its destination (in transit there) before any unit arrives, then the receipt moves it
    await read_then(
        store.apply_events([StockEvent("e5", "transfer_out", "SKU1", "S2", 2, at, to_location="S4")])
    )
    await read_then(store.apply_events([StockEvent("e6", "transfer_in", "SKU1", "S4", 2, at)]))
    await store.apply_events([StockEvent("e7", "return", "SKU1", "S3", 1, at)])
    await read_then(
        store.apply_events(
            [StockEvent("e8", "return_disposition", "SKU1", "S3", 1, at, disposition="restock")]
        )
    )
    # the sweeper's expiry of an idle hold
    await store.reserve(ask("k3", qty=1, ttl=60))
    await store.get_available(["SKU1", "SKU2"])
    clock.advance(61)
    assert await store.sweep_expired() == 1
    assert await ready(store, "SKU1") is None
    expected = {"S1": 7, "S2": 1, "S3": 3, "S4": 2}
    assert await store.get_available(["SKU1"]) == {"SKU1": expected}
    levels = await store.get_levels(["SKU1"])
    assert {loc: level.available for loc, level in levels["SKU1"].items()} == expected


async def test_a_reservation_writes_into_the_answer_what_the_script_would_write(
    store: RedisStockStore,
) -> None:
    """A reservation brings the answers of its SKUs up to date in place (the taken locations' counts, and
    its hold's expiry when it is the earliest): the text is the one the script writes whole, whatever the
    holds' order of expiry, for a location whose name starts another's, and for one the answer escapes
    (then written whole)."""
    await store.put_snapshot([SnapshotRow("SKU1", "S10", 12), SnapshotRow("SKU1", 'S"3', 6)])
    await store.get_available(["SKU1", "SKU2"])
    takes = [
        ("k1", [("SKU1", "S1", 2), ("SKU1", "S10", 3), ("SKU2", "S1", 1)], 600),
        ("k2", [("SKU1", "S10", 1)], 60),  # expires before k1: the answer's earliest hold
        ("k3", [("SKU1", 'S"3', 2), ("SKU1", "S1", 1)], 900),
        ("k4", [("SKU1", "S2", 4), ("SKU2", "S1", 6)], 30),  # every unit of both: counts down to 0
    ]
    for key, lines, ttl in takes:
        taken = await store.reserve(
            ReservationRequest("o1", "web", key, tuple(ReservationLine(*line) for line in lines), ttl)
        )
        assert taken.reservation is not None and not taken.short, key
        written = {sku: await ready(store, sku) for sku in ("SKU1", "SKU2")}
        await store.client.delete(*(store.keys.ready(sku) for sku in ("SKU1", "SKU2")))
        await store.get_available(["SKU1", "SKU2"])  # the script writes both answers whole
        assert {sku: await ready(store, sku) for sku in ("SKU1", "SKU2")} == written, key
    assert await store.get_available(["SKU1", "SKU2"]) == {
        "SKU1": {"S1": 2, "S2": 0, "S10": 8, 'S"3': 4},
        "SKU2": {"S1": 0},
    }
    # the room a reservation finds comes from the answers too: none at a location the SKU does not have,
    # what is left at one it has (the escaped one read from the summary), nothing taken when one is short
    refused = await store.reserve(
        ReservationRequest(
            "o1",
            "web",
            "k5",
            (
                ReservationLine("SKU1", "S9", 1),
                ReservationLine("SKU1", 'S"3', 5),
                ReservationLine("SKU1", "S10", 9),
            ),
            60,
        )
    )
    assert [(s.location, s.requested, s.available) for s in refused.short] == [
        ("S9", 1, 0),
        ('S"3', 5, 4),
        ("S10", 9, 8),
    ]
    assert await store.get_available(["SKU1"]) == {"SKU1": {"S1": 2, "S2": 0, "S10": 8, 'S"3': 4}}


async def test_a_hold_expires_on_the_ready_path_at_its_exact_millisecond(
    store: RedisStockStore, clock: FakeClock
) -> None:
    result = await store.reserve(ask("k1", qty=3, ttl=60))
    assert result.reservation is not None
    expires_ms = to_ms(result.reservation.expires_at)
    assert await store.get_available(["SKU1"]) == {"SKU1": {"S1": 2, "S2": 4}}
    assert await ready(store, "SKU1") == f'{expires_ms}|{{"S1":2,"S2":4}}'.encode()
    clock.now = result.reservation.expires_at
    clock.advance(-0.001)
    assert await store.get_available(["SKU1"]) == {"SKU1": {"S1": 2, "S2": 4}}
    clock.advance(0.001)
    assert await store.get_available(["SKU1"]) == {"SKU1": {"S1": 5, "S2": 4}}
    assert await ready(store, "SKU1") == b'|{"S1":5,"S2":4}'


async def test_a_reservation_reads_its_room_from_the_answer_only_while_no_hold_is_due(
    store: RedisStockStore, clock: FakeClock
) -> None:
    """A reservation takes a SKU's counts from its answer while the answer's earliest hold is not due: at
    that hold's exact millisecond it prunes first (the units come back), and a location whose summary is
    below 0 (more reserved than sellable) has no room, with or without a floor."""
    first = await store.reserve(ask("k1", qty=3, ttl=60))
    assert first.reservation is not None
    await store.get_available(["SKU1"])
    clock.now = first.reservation.expires_at
    clock.advance(-0.001)
    short = await store.reserve(ask("k2", qty=3))
    assert [(s.location, s.available) for s in short.short] == [("S1", 2)]
    assert await ready(store, "SKU1") is not None  # the answer the reservation found is still there
    clock.advance(0.001)
    taken = await store.reserve(ask("k3", qty=5, ttl=600))
    assert taken.reservation is not None and not taken.short
    assert await store.get_available(["SKU1"]) == {"SKU1": {"S1": 0, "S2": 4}}
    # sellable below reserved: the summary is -2, the answer says 0
    await store.apply_events([StockEvent("e1", "adjustment", "SKU1", "S1", 3, clock.now)])
    await store.get_available(["SKU1"])
    assert await ready(store, "SKU1") is not None
    for key, floor in (("k4", 0), ("k5", 1)):
        refused = await store.reserve(
            ReservationRequest("o1", "web", key, (ReservationLine("SKU1", "S1", 1, floor),), 600)
        )
        assert [(s.location, s.available) for s in refused.short] == [("S1", 0)], key
    assert await store.release(reservation_id("k3"))
    assert await store.get_available(["SKU1"]) == {"SKU1": {"S1": 3, "S2": 4}}


async def test_without_the_state_marker_the_ready_path_refuses(store: RedisStockStore) -> None:
    await store.get_available(["SKU1"])
    assert await ready(store, "SKU1") is not None
    store.recovery = None  # nothing rebuilds behind the test's back
    await store.client.delete(store.keys.built)
    with pytest.raises(StockStateLost):
        await store.get_available(["SKU1"])


async def test_an_unchanged_sku_is_read_without_a_script(
    private_redis: str, request: pytest.FixtureRequest
) -> None:
    async with open_backend("redis", request, FakeClock(), redis_url=private_redis) as store:
        await store.put_snapshot([SnapshotRow("SKU1", "S1", 5)])
        await store.get_available(["SKU1"])  # the script writes the answer
        watcher, marker = redis.Redis.from_url(private_redis), redis.Redis.from_url(private_redis)
        marker.ping()  # its connection is open before watching
        with watcher.monitor() as monitor:
            read = asyncio.create_task(store.get_available(["SKU1"]))
            assert await read == {"SKU1": {"S1": 5}}
            marker.echo("done")
            commands = []
            for seen in monitor.listen():
                if seen["command"] == "ECHO done":
                    break
                commands.append(seen["command"].split()[0])
        watcher.close()
        marker.close()
    assert commands == ["EXISTS", "MGET"]
