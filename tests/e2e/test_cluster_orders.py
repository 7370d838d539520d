"""Over HTTP on a Redis Cluster: orders whose SKUs live on several slots are taken in steps under an intent
(service/stock/crossslot.py): granted, replayed, refused all or nothing, committed; and a worker killed
between the steps of such an order (SIGKILL, armed by `STOCK_TEST_KILL_AFTER_STEP`) leaves, once the
recovery sweep ran, no oversell and no leaked reservation: levels and reservation indexes match the
journal, and the retried order gets one consistent answer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from redis.crc import key_slot
from sqlalchemy import text

from service.stock.crossslot import KILL_AFTER_STEP, LEASE_MS
from service.stock.recovery import rebuild_redis
from service.stock.redis import RedisStockStore
from service.stock.store import Levels
from tests.e2e.stock_server import backend_env, served

FIRST = "A1"
OTHER = next(f"B{i}" for i in range(100) if key_slot(f"B{i}".encode()) != key_slot(FIRST.encode()))


def _body(key: str, *lines: tuple[str, int]) -> dict[str, object]:
    return {
        "order_id": key,
        "channel": "web",
        "idempotency_key": key,
        "lines": [{"sku": sku, "location": "S1", "qty": qty} for sku, qty in lines],
        "ttl_seconds": 600,
    }


def _available(client: httpx.Client, sku: str) -> int:
    return int(client.get(f"/v1/stock/{sku}").json()["totals"]["available"])


@pytest.mark.slow
def test_a_cross_slot_order_is_granted_replayed_refused_whole_and_committed(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    env = backend_env("redis-cluster", request, tmp_path)
    with (
        served(env, tmp_path, workers=1) as server,
        httpx.Client(base_url=server.base, headers=server.headers, timeout=10) as client,
    ):
        rows = [{"sku": sku, "location": "S1", "sellable": 3} for sku in (FIRST, OTHER)]
        assert client.put("/v1/stock", json=rows).status_code == 200
        granted = client.post("/v1/reservations", json=_body("k1", (FIRST, 1), (OTHER, 2)))
        again = client.post("/v1/reservations", json=_body("k1", (FIRST, 1), (OTHER, 2)))
        short = client.post("/v1/reservations", json=_body("k2", (FIRST, 1), (OTHER, 2)))
        after_short = [_available(client, sku) for sku in (FIRST, OTHER)]
        committed = client.post(f"/v1/reservations/{granted.json()['id']}/commit")
        levels = [client.get(f"/v1/stock/{sku}").json()["totals"] for sku in (FIRST, OTHER)]
    assert granted.status_code == 201, granted.text
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == granted.json()["id"]
    assert short.status_code == 409, short.text
    assert "lines" in short.text
    assert after_short == [2, 1]  # the first slot's step of the short order was given back
    assert committed.status_code == 200, committed.text
    assert [(t["sellable"], t["reserved"]) for t in levels] == [(2, 0), (1, 0)]


async def _summary(store: RedisStockStore) -> list[int]:
    """Per SKU, the raw availability summary at S1 (`avail:{SKU}`, not clamped)."""
    return [int(await store.client.hget(store.keys.avail(sku), "S1") or -99) for sku in (FIRST, OTHER)]


async def _recover_and_check(env: dict[str, str], rid_prefix: str) -> dict[str, object]:
    """Run the recovery sweep past the dead worker's lease, then compare Redis with the journal."""
    moment = datetime.now(UTC) + timedelta(milliseconds=2 * LEASE_MS)
    nodes = env["REDIS_CLUSTER_URLS"]
    store = await RedisStockStore.open(f"redis+cluster://{nodes}", env["DATABASE_URL"], clock=lambda: moment)
    try:
        assert store.cross is not None
        found: dict[str, object] = {}
        async with store.journal.engine.connect() as conn:
            found["intents_before"] = (
                await conn.execute(text("SELECT count(*) FROM stock_intents"))
            ).scalar_one()
        found["taken_before"] = await store.get_levels([FIRST, OTHER])
        found["summary_before"] = await _summary(store)
        found["resolved"] = await store.cross.recover_due()
        async with store.journal.engine.connect() as conn:
            found["intents_after"] = (
                await conn.execute(text("SELECT count(*) FROM stock_intents"))
            ).scalar_one()
        found["levels"] = await store.get_levels([FIRST, OTHER])
        found["summary"] = await _summary(store)  # before the rebuild below rewrites it
        parts = [await store.client.hgetall(store.keys.part(sku)) for sku in (FIRST, OTHER)]
        holds = [await store.client.zrange(store.keys.hold(sku), 0, -1) for sku in (FIRST, OTHER)]
        found["leftover"] = [k for p in parts for k in p if k.decode().startswith(rid_prefix)]
        found["leftover"] += [k for h in holds for k in h if k.decode().startswith(rid_prefix)]
        # Redis matches the journal: rebuilding from the journal alone gives the same levels
        await rebuild_redis(store)
        found["rebuilt"] = await store.get_levels([FIRST, OTHER])
        return found
    finally:
        await store.close()


@pytest.mark.slow
def test_a_worker_killed_between_the_steps_of_a_cross_slot_order_leaves_nothing_after_recovery(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from service.stock.redis_layout import reservation_id

    env = backend_env("redis-cluster", request, tmp_path)
    body = _body("k-killed", (FIRST, 1), (OTHER, 1))
    # the worker kills itself (SIGKILL) right after the first SKU step of a cross-slot order
    with (
        served({**env, KILL_AFTER_STEP: "1"}, tmp_path, workers=1) as server,
        httpx.Client(base_url=server.base, headers=server.headers, timeout=10) as client,
    ):
        rows = [{"sku": sku, "location": "S1", "sellable": 3} for sku in (FIRST, OTHER)]
        assert client.put("/v1/stock", json=rows).status_code == 200
        with pytest.raises(httpx.HTTPError):
            client.post("/v1/reservations", json=body)
    found = asyncio.run(_recover_and_check(env, reservation_id("k-killed")))
    # the worker died between the steps: one SKU taken, the intent open
    assert found["intents_before"] == 1
    before = found["taken_before"]
    assert isinstance(before, dict)
    assert sorted(levels["S1"].reserved for levels in before.values()) == [0, 1]
    assert sorted(found["summary_before"]) == [2, 3]  # type: ignore[call-overload]
    # the recovery compensated it: nothing held, no part or hold left, and the journal agrees
    assert found["resolved"] == 1 and found["intents_after"] == 0
    assert found["levels"] == {sku: {"S1": Levels(sellable=3)} for sku in (FIRST, OTHER)}
    assert found["summary"] == [3, 3]  # the compensation gave the summary back with the reserved units
    assert found["leftover"] == []
    assert found["rebuilt"] == found["levels"]
    # the retried order (same key, same body) is taken once, and replayed after that
    with (
        served(env, tmp_path, workers=1) as server,
        httpx.Client(base_url=server.base, headers=server.headers, timeout=10) as client,
    ):
        retried = client.post("/v1/reservations", json=body)
        replayed = client.post("/v1/reservations", json=body)
        available = [_available(client, sku) for sku in (FIRST, OTHER)]
    assert retried.status_code == 201, retried.text
    assert replayed.status_code == 201 and replayed.json()["id"] == retried.json()["id"]
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    assert available == [2, 2]
