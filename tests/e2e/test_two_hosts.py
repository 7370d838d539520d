"""Two service hosts (two `retail-policy serve` processes on their own loopback ports) on one Redis Cluster
and one PostgreSQL database: the oversell race split across both hosts and a hot ruleset switch at the
same time.

Host A loads the demo network; both decide transfers under constant load while 600 one-unit
reservations, sent half to each host, race for 100 units of one SKU, and a new version of the transfer
ruleset is published through host A in the middle of the race. What must hold:

- exactly 100 reservations granted, the other 500 refused (409), none answered 5xx; both hosts read the
  same levels afterwards (every unit reserved, none available);
- every transfer decision answers 200 and names a version that was active when it was made: version 2
  only once the publish was asked for, version 1 only until the publish answered plus the switch
  deadline;
- each host serves version 2 within the switch deadline of the publish, and once a host reports the new
  generation on `/health/ready` it never decides on version 1 again;
- the fleet view shows both hosts on the new generation, and a decision made on one host is readable
  through the other (one decision log).
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.db.engine import create_engine, session_factory
from service.security.keys import create_key
from service.settings import DatabaseSettings
from tests.e2e.stock_server import backend_env
from tests.server import running_server
from tests.services import postgres_database

pytestmark = pytest.mark.slow

DEADLINE_SECONDS = 10  # RULES_SWITCH_DEADLINE_SECONDS of both hosts (the service's default)
LIMIT_SECONDS = 60.0  # every wait below gives up after this
UNITS = {"S1": 34, "S2": 33, "S3": 33}
REQUESTS = 600
RULESET = "store-transfer-approval"
TRANSFER = {
    "transfer_id": "t-two-hosts",
    "sku": "SKU-MUG",
    "qty": 2,
    "from_location": "STORE-MAN-01",
    "to_location": "STORE-LDS-01",
    "requested_by": {"id": "u-1", "role": "store_manager"},
}


@dataclass(frozen=True)
class Decision:
    host: str
    sent: float
    received: float
    status: int | None
    version: int | None
    decision_id: str | None
    error: str | None


@dataclass
class Hosts:
    a: str
    b: str
    keys: dict[str, str]

    def __iter__(self) -> Iterator[str]:
        return iter((self.a, self.b))


async def make_keys(url: str) -> dict[str, str]:
    engine = create_engine(DatabaseSettings(url=url))
    try:
        sessions = session_factory(engine)
        return {
            "stock": await create_key(sessions, "till", ["stock", "decide"]),
            "author": await create_key(sessions, "alice", ["author"]),
            "publisher": await create_key(sessions, "pat", ["publisher"]),
        }
    finally:
        await engine.dispose()


@pytest.fixture
def hosts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hosts]:
    """Host A (demo network) and host B, one worker each, on the session's Redis Cluster (flushed) and a
    fresh PostgreSQL database."""
    cluster = backend_env("redis-cluster", request, tmp_path)
    with postgres_database() as url:
        common = {
            **cluster,
            "DATABASE_URL": url,
            "RULES_ENGINE": "python",
            "RULES_SWITCH_DEADLINE_SECONDS": str(DEADLINE_SECONDS),
            "RULES_HEARTBEAT_SECONDS": "1",
        }
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        with running_server(tmp_path / "a", env=common, demo=True) as a:
            keys = asyncio.run(make_keys(url))
            with running_server(tmp_path / "b", env=common) as b:
                yield Hosts(a, b, keys)


def wait_for(condition: Callable[[], bool]) -> bool:
    give_up = time.monotonic() + LIMIT_SECONDS
    while not condition():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.05)
    return True


def decide(client: httpx.Client, host: str) -> Decision:
    sent = time.monotonic()
    try:
        response = client.post(f"{host}/v1/decisions/transfer", json=TRANSFER)
        received = time.monotonic()
        body = response.json()
        if response.status_code != 200:
            return Decision(host, sent, received, response.status_code, None, None, response.text[:200])
        return Decision(
            host, sent, received, 200, int(body["ruleset"]["version"]), str(body["decision_id"]), None
        )
    except Exception as exc:  # a transport failure is a failed decision
        return Decision(host, sent, time.monotonic(), None, None, None, f"{type(exc).__name__}: {exc}")


def decision_load(host: str, key: str, stop: threading.Event, out: list[Decision]) -> None:
    """Transfer decisions on `host` until told to stop (or the hard limit)."""
    give_up = time.monotonic() + 4 * LIMIT_SECONDS
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30.0) as client:
        while not stop.is_set() and time.monotonic() < give_up:
            out.append(decide(client, host))


async def race(hosts: Hosts, statuses: list[int], started: threading.Event) -> None:
    """600 one-unit reservations of one SKU, even ones to host A and odd ones to host B, 64 at a time."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    gate = asyncio.Semaphore(64)
    locations = sorted(UNITS)
    headers = {"Authorization": f"Bearer {hosts.keys['stock']}"}
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:

        async def one(i: int) -> None:
            body = {
                "order_id": f"o{i}",
                "channel": "web",
                "idempotency_key": f"two-hosts-{i}",
                "lines": [{"sku": "HOT", "location": locations[i % 3], "qty": 1}],
                "ttl_seconds": 600,
            }
            host = hosts.a if i % 2 == 0 else hosts.b
            async with gate:
                try:
                    statuses.append((await client.post(f"{host}/v1/reservations", json=body)).status_code)
                except httpx.HTTPError:
                    statuses.append(0)  # counted as a failure below
            started.set()

        await asyncio.gather(*(one(i) for i in range(REQUESTS)))


def generation_of(host: str) -> int:
    return int(httpx.get(f"{host}/health/ready", timeout=10).json()["rules"]["generation"])


def test_two_hosts_on_one_cluster_and_database_pass_the_race_and_the_hot_switch_together(
    hosts: Hosts,
) -> None:
    stock_headers = {"Authorization": f"Bearer {hosts.keys['stock']}"}
    rows = [{"sku": "HOT", "location": loc, "sellable": qty} for loc, qty in UNITS.items()]
    put = httpx.put(f"{hosts.a}/v1/stock", json=rows, headers=stock_headers, timeout=10)
    assert put.status_code == 200, put.text
    yaml = (Path(__file__).resolve().parents[2] / f"rulesets/transfer/{RULESET}.yaml").read_text()
    created = httpx.post(
        f"{hosts.b}/v1/rulesets/{RULESET}/versions",
        content=yaml.replace("Route store-to-store", "Version 2. Route store-to-store"),
        headers={"Authorization": f"Bearer {hosts.keys['author']}", "Content-Type": "application/yaml"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    publisher = {"Authorization": f"Bearer {hosts.keys['publisher']}"}
    old_generation = generation_of(hosts.a)

    decisions: dict[str, list[Decision]] = {host: [] for host in hosts}
    stop = threading.Event()
    loads = [
        threading.Thread(target=decision_load, args=(host, hosts.keys["stock"], stop, decisions[host]))
        for host in hosts
        for _ in range(2)
    ]
    statuses: list[int] = []
    started = threading.Event()
    racer = threading.Thread(target=lambda: asyncio.run(race(hosts, statuses, started)))
    confirmed: dict[str, float] = {}  # host -> when its /health/ready first named the new generation
    for thread in loads:
        thread.start()
    try:
        assert wait_for(lambda: all(any(d.version == 1 for d in decisions[h]) for h in hosts)), (
            "both hosts should decide on version 1 first"
        )
        racer.start()
        assert started.wait(LIMIT_SECONDS), "the race did not start"
        asked = time.monotonic()
        published = httpx.post(
            f"{hosts.a}/v1/rulesets/{RULESET}/versions/2/publish", headers=publisher, timeout=30
        )
        done = time.monotonic()
        assert published.status_code == 200, published.text
        racing_at_publish = len(statuses) < REQUESTS
        fleet = httpx.get(f"{hosts.a}/v1/rulesets/fleet", headers=publisher, timeout=10).json()
        new_generation = int(fleet["generation"])
        assert new_generation > old_generation, fleet

        def confirms() -> bool:
            for host in hosts:
                if host not in confirmed and generation_of(host) >= new_generation:
                    confirmed[host] = time.monotonic()
            return len(confirmed) == 2

        assert wait_for(confirms), f"a host never reported generation {new_generation}"
        # each host answers on the new version for a while after it confirmed it
        assert wait_for(
            lambda: all(sum(1 for d in list(decisions[h]) if d.sent > confirmed[h]) >= 20 for h in hosts)
        )
        racer.join(LIMIT_SECONDS)
        assert not racer.is_alive(), "the race did not finish"
    finally:
        stop.set()
        for thread in loads:
            thread.join(LIMIT_SECONDS)

    # the race: exactly the stock granted, across both hosts, nothing failed
    assert Counter(statuses) == Counter({201: 100, 409: REQUESTS - 100}), Counter(statuses)
    assert racing_at_publish, "the publish should fall inside the race"
    for host in hosts:
        stock = httpx.get(f"{host}/v1/stock/HOT", headers=stock_headers, timeout=10).json()
        assert {row["location"]: row["reserved"] for row in stock["locations"]} == UNITS, (host, stock)
        assert stock["totals"]["available"] == 0, (host, stock)

    # the switch: every decision answered, on a version active when it was made
    every = [d for host in hosts for d in decisions[host]]
    failures = [d for d in every if d.status != 200]
    assert not failures, f"{len(failures)} of {len(every)} decisions failed, e.g. {failures[:3]}"
    assert {d.version for d in every} == {1, 2}
    early = [d for d in every if d.version == 2 and d.received < asked]
    assert not early, f"version 2 answered before its publish was asked for: {early[:3]}"
    late = [d for d in every if d.version == 1 and d.sent > done + DEADLINE_SECONDS]
    assert not late, f"version 1 answered past the switch deadline: {late[:3]}"
    switches: list[float] = []
    for host in hosts:
        mine = sorted(decisions[host], key=lambda d: d.sent)
        first_new = min(d.received for d in mine if d.version == 2)
        assert first_new - done <= DEADLINE_SECONDS, (host, first_new - done)
        switches.append(first_new - done)
        stale = [d for d in mine if d.version == 1 and d.sent > min(first_new, confirmed[host])]
        assert not stale, f"{host} decided on version 1 after it served version 2: {stale[:3]}"

    print(
        f"\n{len(every)} decisions on two hosts, 0 failed; {REQUESTS} reservations, 100 granted; "
        f"slowest host switched {max(switches):.2f} s after the publish answered"
    )

    # one fleet, one decision log
    def fleet_on_new() -> bool:
        view = httpx.get(f"{hosts.b}/v1/rulesets/fleet", headers=publisher, timeout=10).json()
        return bool(view["alive"] == 2 and view["behind"] == 0 and view["generation"] == new_generation)

    assert wait_for(fleet_on_new), httpx.get(f"{hosts.b}/v1/rulesets/fleet", headers=publisher).json()
    for made_on, read_on in ((hosts.a, hosts.b), (hosts.b, hosts.a)):
        decision = next(d for d in reversed(decisions[made_on]) if d.decision_id is not None)
        found = functools.partial(logged, read_on, decision.decision_id, hosts.keys["stock"])
        assert wait_for(lambda found=found: found() == 2), (made_on, read_on, decision)


def logged(host: str, decision_id: str | None, key: str) -> Any:
    """The ruleset version the decision log holds for `decision_id`, read through `host` (None if absent)."""
    response = httpx.get(
        f"{host}/v1/decisions/{decision_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    return response.json()["ruleset"]["version"] if response.status_code == 200 else None
