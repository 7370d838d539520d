"""Redis outages and losses: 503 with Retry-After and nothing changed while Redis is down, service
back when it returns; after the Redis data is wiped, `retail-policy stock rebuild` restores every
acknowledged reservation, level and applied event from the SQL journal."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from service.db.models import StockJournalEntry
from tests.apiclient import ApiClient, api_client, make_settings
from tests.services import start_redis, unavailable

ROWS = [
    {"sku": "TEE", "location": "S1", "sellable": 10},
    {"sku": "TEE", "location": "S2", "sellable": 4},
    {"sku": "MUG", "location": "S1", "sellable": 6},
]


def order(key: str, *lines: tuple[str, str, int]) -> dict[str, Any]:
    return {
        "order_id": f"o-{key}",
        "channel": "web",
        "idempotency_key": key,
        "lines": [{"sku": s, "location": loc, "qty": q} for s, loc, q in lines],
        "ttl_seconds": 3600,
    }


class OwnRedis:
    """A redis-server of this test's own, which the test may stop and start again on the same port."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary, self.workdir = binary, workdir
        self.process, self.port = start_redis(binary, str(workdir))
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Save to disk and shut down, as an operator restarting Redis would."""
        redis.Redis.from_url(self.url).shutdown(save=True)
        self.process.wait(10)

    def start(self) -> None:
        self.process, _ = start_redis(self.binary, str(self.workdir), port=self.port)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed")
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = OwnRedis(binary, workdir)  # type: ignore[arg-type]
    yield server
    if server.process.poll() is None:
        server.process.terminate()
        server.process.wait(10)


async def journal_size(api: ApiClient) -> int:
    async with api.session() as session:
        return int((await session.execute(select(func.count()).select_from(StockJournalEntry))).scalar_one())


async def snapshot_of(api: ApiClient, skus: list[str]) -> dict[str, Any]:
    return {sku: (await api.as_("stock").get(f"/v1/stock/{sku}")).json() for sku in skus}


async def test_redis_down_answers_503_changes_nothing_and_recovers(
    own_redis: OwnRedis, sqlite_url: str
) -> None:
    async with api_client(make_settings(sqlite_url, "redis", own_redis.url)) as api:
        stock, decide = api.as_("stock"), api.as_("decide")
        assert (await stock.put("/v1/stock", json=ROWS)).status_code == 200
        held = (await decide.post("/v1/reservations", json=order("before", ("TEE", "S1", 2)))).json()
        before, journaled = await snapshot_of(api, ["TEE", "MUG"]), await journal_size(api)

        own_redis.stop()
        down = [
            await decide.post("/v1/reservations", json=order("during", ("TEE", "S1", 1))),
            await decide.post(f"/v1/reservations/{held['id']}/commit"),
            await stock.post(
                "/v1/stock/events",
                json=[{"event_id": "e1", "type": "sale", "sku": "TEE", "location": "S1", "qty": 1}],
            ),
            await stock.put("/v1/stock", json=ROWS[:1]),
            await stock.get("/v1/stock/TEE"),
        ]
        assert [r.status_code for r in down] == [503] * 5
        assert all(r.headers.get("retry-after") for r in down)
        assert all(r.headers["content-type"].startswith("application/problem+json") for r in down)
        assert await journal_size(api) == journaled

        own_redis.start()
        assert await snapshot_of(api, ["TEE", "MUG"]) == before
        assert (
            await decide.post("/v1/reservations", json=order("during", ("TEE", "S1", 1)))
        ).status_code == 201
        assert (await decide.post(f"/v1/reservations/{held['id']}/commit")).status_code == 200


def _rebuild(database_url: str, redis_url: str) -> str:
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "STOCK_BACKEND": "redis"}
    done = subprocess.run(
        [sys.executable, "-m", "service", "stock", "rebuild"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def _history(api: ApiClient) -> tuple[list[dict[str, Any]], list[str]]:
    """Snapshot, events, four reservations (one committed, one released): what the journal must give back."""
    stock, decide = api.as_("stock"), api.as_("decide")
    await stock.put("/v1/stock", json=ROWS)
    await stock.post("/v1/stock/events", json=EVENTS)
    ids = []
    for i, lines in enumerate(
        [[("TEE", "S1", 2)], [("TEE", "S1", 1), ("MUG", "S1", 3)], [("TEE", "S2", 2)], [("MUG", "S1", 1)]]
    ):
        response = await decide.post("/v1/reservations", json=order(f"k{i}", *lines))
        assert response.status_code == 201
        ids.append(response.json()["id"])
    await decide.post(f"/v1/reservations/{ids[2]}/commit")
    await decide.post(f"/v1/reservations/{ids[3]}/release")
    return [(await decide.get(f"/v1/reservations/{rid}")).json() for rid in ids], ids


EVENTS = [
    {"event_id": "rcv-1", "type": "receipt", "sku": "MUG", "location": "S1", "qty": 5},
    {"event_id": "pos-1", "type": "sale", "sku": "TEE", "location": "S2", "qty": 1},
    {
        "event_id": "out-1",
        "type": "transfer_out",
        "sku": "MUG",
        "location": "S1",
        "qty": 2,
        "to_location": "S2",
    },
]


async def ready_again(api: ApiClient, seconds: float = 30.0) -> dict[str, Any]:
    """Poll /health/ready until it answers 200 (failing after `seconds`); its body."""
    async with asyncio.timeout(seconds):
        while True:
            response = await api.http.get("/health/ready")
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                return body
            await asyncio.sleep(0.05)


async def _journal_gives_everything_back(
    api: ApiClient, levels: Any, reservations: Any, ids: list[str]
) -> None:
    stock, decide = api.as_("stock"), api.as_("decide")
    assert await snapshot_of(api, ["TEE", "MUG"]) == levels
    assert [(await decide.get(f"/v1/reservations/{rid}")).json() for rid in ids] == reservations
    again = (await stock.post("/v1/stock/events", json=EVENTS)).json()
    assert again["duplicates"] == 3
    assert (await decide.post("/v1/reservations", json=order("k0", ("TEE", "S1", 2)))).json()["id"] == ids[0]
    assert (await decide.post(f"/v1/reservations/{ids[1]}/commit")).json()["status"] == "committed"


async def test_wiped_redis_answers_503_then_rebuilds_itself_with_every_acknowledged_reservation(
    redis_url: str, sqlite_url: str
) -> None:
    async with api_client(make_settings(sqlite_url, "redis", redis_url)) as api:
        reservations, ids = await _history(api)
        levels = await snapshot_of(api, ["TEE", "MUG"])

        redis.Redis.from_url(redis_url).flushdb()
        lost = await api.as_("stock").get("/v1/stock/TEE")
        assert lost.status_code == 503 and lost.headers["retry-after"]
        assert "rebuilding from the journal" in lost.json()["detail"]

        await ready_again(api)
        await _journal_gives_everything_back(api, levels, reservations, ids)


async def test_stock_rebuild_command_rebuilds_a_serving_store_in_place(
    redis_url: str, sqlite_url: str
) -> None:
    async with api_client(make_settings(sqlite_url, "redis", redis_url)) as api:
        reservations, ids = await _history(api)
        levels = await snapshot_of(api, ["TEE", "MUG"])

        assert "rebuilt from 10 journal entries" in _rebuild(sqlite_url, redis_url)
        await _journal_gives_everything_back(api, levels, reservations, ids)
