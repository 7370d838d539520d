"""Redis outages and losses: 503 with Retry-After and nothing changed while Redis is down, service
back when it returns; after Redis comes back without its data (flushed, or restarted empty under load by
two worker processes), requests answer 503 rather than 409, the node is not ready, and it rebuilds every
acknowledged reservation, level and applied event from the SQL journal by itself (`retail-policy stock
rebuild` does the same on demand); readiness and 503 bodies name no address, port or driver message."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select

from service.db.models import StockJournalEntry
from tests.api.decisions_fixtures import ITEMS, LOCATIONS
from tests.apiclient import ApiClient, api_client, make_settings
from tests.e2e.stock_server import Served, backend_env, served
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

    def restart_empty(self) -> None:
        """Shut down without saving and start again with no data: a restart without persistence."""
        (self.workdir / "dump.rdb").unlink(missing_ok=True)
        self.restart_from_last_save()

    def restart_from_last_save(self) -> None:
        """Shut down without saving and start again from the last snapshot saved (if any)."""
        redis.Redis.from_url(self.url).shutdown(nosave=True)
        self.process.wait(10)
        self.start()


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


async def _rebuilding_or_right(api: ApiClient, levels: dict[str, Any]) -> None:
    """Right after the loss a read answers 503 (rebuilding), or, when the sweeper's check found the loss
    first and the rebuild is done, the right levels: never the lost ones."""
    for sku in ("TEE", "MUG"):
        read = await api.as_("stock").get(f"/v1/stock/{sku}")
        if read.status_code == 503:
            assert read.headers["retry-after"]
            assert "rebuilding from the journal" in read.json()["detail"]
        else:
            assert read.json() == levels[sku]


def _rebuilt(redis_url: str) -> bool:
    """Whether Redis was rebuilt from a journal (a new deployment's marker is at position 0)."""
    return int(redis.Redis.from_url(redis_url).hget("rp:built", "journal") or 0) > 0


async def test_wiped_redis_answers_503_then_rebuilds_itself_with_every_acknowledged_reservation(
    redis_url: str, sqlite_url: str
) -> None:
    async with api_client(make_settings(sqlite_url, "redis", redis_url)) as api:
        reservations, ids = await _history(api)
        levels = await snapshot_of(api, ["TEE", "MUG"])

        redis.Redis.from_url(redis_url).flushdb()
        await _rebuilding_or_right(api, levels)

        await ready_again(api)
        assert _rebuilt(redis_url)
        await _journal_gives_everything_back(api, levels, reservations, ids)


async def test_redis_back_from_an_older_snapshot_is_behind_the_journal_and_rebuilds_itself(
    own_redis: OwnRedis, sqlite_url: str
) -> None:
    async with api_client(make_settings(sqlite_url, "redis", own_redis.url)) as api:
        stock, decide = api.as_("stock"), api.as_("decide")
        await stock.put("/v1/stock", json=ROWS)
        first = (await decide.post("/v1/reservations", json=order("k1", ("TEE", "S1", 2)))).json()
        redis.Redis.from_url(own_redis.url).save()  # the snapshot Redis comes back with
        later = (await decide.post("/v1/reservations", json=order("k2", ("MUG", "S1", 3)))).json()
        await decide.post(f"/v1/reservations/{first['id']}/commit")
        levels = await snapshot_of(api, ["TEE", "MUG"])

        await asyncio.to_thread(own_redis.restart_from_last_save)
        await _rebuilding_or_right(api, levels)

        await ready_again(api)
        assert _rebuilt(own_redis.url)
        assert await snapshot_of(api, ["TEE", "MUG"]) == levels
        assert (await decide.get(f"/v1/reservations/{later['id']}")).json()["status"] == "held"
        assert (await decide.get(f"/v1/reservations/{first['id']}")).json()["status"] == "committed"


async def test_stock_rebuild_command_rebuilds_a_serving_store_in_place(
    redis_url: str, sqlite_url: str
) -> None:
    async with api_client(make_settings(sqlite_url, "redis", redis_url)) as api:
        reservations, ids = await _history(api)
        levels = await snapshot_of(api, ["TEE", "MUG"])

        assert "rebuilt from 10 journal entries" in _rebuild(sqlite_url, redis_url)
        await _journal_gives_everything_back(api, levels, reservations, ids)


async def _load_across_a_restart(server: Served, own_redis: OwnRedis, shoppers: int) -> Load:
    """`shoppers` clients reserve one unit at a time (a 503 retried with the same key) while Redis is
    restarted empty, until 40 reservations were granted before the restart and 40 after it."""
    load = Load()
    enough_before, restarted, stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    async with httpx.AsyncClient(base_url=server.base, headers=server.headers, timeout=60) as client:

        async def shopper(n: int) -> None:
            i = 0
            while not stop.is_set():
                key = f"c{n}-{i}"
                while True:
                    response = await client.post("/v1/reservations", json=order(key, ("TEE", "S1", 1)))
                    load.answers[response.status_code] += 1
                    if response.status_code != 503:
                        break
                    assert response.headers["retry-after"]
                    load.bodies_503.add(response.text)
                    await asyncio.sleep(0.01)  # a client's pause before its retry, not a wait for a result
                if response.status_code != 201:
                    break  # counted in load.answers
                load.granted[key] = response.json()["id"]
                load.after_restart += restarted.is_set()
                if len(load.granted) >= 40:
                    enough_before.set()
                if load.after_restart >= 40:
                    stop.set()
                i += 1
            enough_before.set()  # stopped early: the checks below report why

        async with asyncio.timeout(120):
            tasks = [asyncio.create_task(shopper(n)) for n in range(shoppers)]
            await enough_before.wait()
            await asyncio.to_thread(own_redis.restart_empty)
            restarted.set()
            await asyncio.gather(*tasks)
            for _ in range(1000):  # both workers ready again (bounded by the timeout)
                if (await client.get("/health/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
    return load


@dataclass
class Load:
    granted: dict[str, str] = field(default_factory=dict)  # idempotency key -> reservation id, every 201
    answers: Counter[int] = field(default_factory=Counter)
    bodies_503: set[str] = field(default_factory=set)
    after_restart: int = 0


@pytest.mark.slow
def test_redis_restarted_empty_under_load_never_answers_409_and_keeps_every_acknowledged_reservation(
    own_redis: OwnRedis, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    stock_units = 400
    env = backend_env("redis", request, tmp_path, redis_url=own_redis.url)
    with served(env, tmp_path, workers=2) as server:
        http = httpx.Client(base_url=server.base, headers=server.headers, timeout=10)
        rows = [{"sku": "TEE", "location": "S1", "sellable": stock_units}]
        assert http.put("/v1/stock", json=rows).status_code == 200

        load = asyncio.run(_load_across_a_restart(server, own_redis, shoppers=8))

        assert set(load.answers) <= {201, 503}, load.answers
        assert load.after_restart >= 40
        for body in load.bodies_503:  # no address, port or driver message
            assert "127.0.0.1" not in body and str(own_redis.port) not in body and "rror" not in body
        assert _rebuilt(own_redis.url)
        statuses = {http.get(f"/v1/reservations/{rid}").json()["status"] for rid in load.granted.values()}
        assert statuses == {"held"}
        level = http.get("/v1/stock/TEE").json()["locations"][0]
        assert (level["sellable"], level["reserved"]) == (stock_units, len(load.granted))
        # never more than the stock: what is left can be taken exactly, and not one unit more
        left = stock_units - len(load.granted)
        assert http.post("/v1/reservations", json=order("more", ("TEE", "S1", left + 1))).status_code == 409
        assert http.post("/v1/reservations", json=order("rest", ("TEE", "S1", left))).status_code == 201
        http.close()


async def test_a_node_that_finds_the_stock_state_lost_answers_503_and_is_not_ready_until_it_is_rebuilt(
    redis_url: str, sqlite_url: str
) -> None:
    async with api_client(make_settings(sqlite_url, "redis", redis_url)) as api:
        stock, decide = api.as_("stock"), api.as_("decide")
        for path, rows in (("/v1/locations", LOCATIONS), ("/v1/items", ITEMS)):
            assert (await stock.put(path, json=rows)).status_code == 200
        await stock.put("/v1/stock", json=[{"sku": "TEE-001", "location": "dc-london", "sellable": 5}])
        held = await decide.post("/v1/reservations", json=order("k", ("TEE-001", "dc-london", 2)))
        availability = {"channel": "ecommerce", "skus": ["TEE-001"]}
        before = (await decide.post("/v1/decisions/availability", json=availability)).json()["decision"]

        # Redis lost its data while another worker holds the rebuild lock: this node waits for it
        lost = redis.Redis.from_url(redis_url)
        lost.flushdb()
        lost.set("rp:rebuilding", "another-worker", px=60_000)
        ready = await api.http.get("/health/ready")
        assert ready.status_code == 503 and ready.headers["retry-after"]
        assert ready.json()["checks"] == {
            "database": "ok",
            "stock": "rebuilding: stock state lost, rebuilding from the journal",
        }
        answers = [
            await decide.post("/v1/reservations", json=order("k2", ("TEE-001", "dc-london", 1))),
            await decide.post("/v1/decisions/availability", json=availability),
            await decide.post(f"/v1/reservations/{held.json()['id']}/commit"),
            await decide.get(f"/v1/reservations/{held.json()['id']}"),
        ]
        assert [r.status_code for r in answers] == [503] * 4
        assert all(r.headers["retry-after"] for r in answers)
        assert all("rebuilding from the journal" in r.json()["detail"] for r in answers)

        # that worker stops without a marker and its lock lapses: this node rebuilds by itself
        lost.delete("rp:rebuilding")
        await ready_again(api)
        assert (await decide.get(f"/v1/reservations/{held.json()['id']}")).json()["status"] == "held"
        after = (await decide.post("/v1/decisions/availability", json=availability)).json()["decision"]
        assert after == before


async def test_readiness_names_no_address_port_or_driver_message_when_redis_is_down(
    own_redis: OwnRedis, sqlite_url: str
) -> None:
    async with api_client(make_settings(sqlite_url, "redis", own_redis.url)) as api:
        own_redis.stop()
        ready = await api.http.get("/health/ready")
        reservation = await api.as_("decide").post("/v1/reservations", json=order("k", ("TEE", "S1", 1)))
        own_redis.start()
    assert ready.status_code == 503
    assert ready.json()["checks"]["stock"] == "down: not answering"
    assert reservation.status_code == 503
    for text in (ready.text, reservation.text):
        assert "127.0.0.1" not in text and str(own_redis.port) not in text
        assert "Errno" not in text and "ConnectionError" not in text
