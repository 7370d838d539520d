"""Hot switch: two uvicorn worker processes under constant load while versions are published.

Every response must name exactly one version (and carry that version's result), none may fail, every
worker must serve a newly published version within 5 seconds of the publish, and once a worker has
answered with the new version it never answers with an older one again.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.db.engine import create_engine, session_factory
from service.db.migrate import upgrade
from service.rules import lifecycle
from service.rules.trial import TrialWorker
from service.security.keys import create_key
from service.settings import DatabaseSettings
from tests.server import running_server
from tests.unit.lifecycle.samples import NAME, SMALL_TRANSFER, transfer_yaml

pytestmark = pytest.mark.slow

SWITCH_LIMIT_SECONDS = 5.0
AFTER_SWITCH_SAMPLES = 20  # answers per worker, after it switched, before the next change
LOAD_THREADS = 4
HARD_STOP_SECONDS = 90.0


@dataclass(frozen=True)
class Sample:
    sent: float
    received: float
    pid: int | None
    version: int | None
    error: str | None
    generation: int | None = None


async def reset_postgres(url: str) -> None:
    engine = create_engine(DatabaseSettings(url=url))
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            await conn.exec_driver_sql("CREATE SCHEMA public")
    finally:
        await engine.dispose()


async def prepare(url: str) -> dict[str, str]:
    """Migrate, store versions 1-3 (1 published), and create the keys the test uses."""
    engine = create_engine(DatabaseSettings(url=url))
    try:
        await upgrade(engine)
        sessions = session_factory(engine)
        with TrialWorker() as trials:
            for marker in ("v1", "v2", "v3"):
                await lifecycle.create_version(sessions, trials, NAME, transfer_yaml(marker), "alice")
            await lifecycle.publish(sessions, trials, NAME, 1, "bob")
        return {
            "publisher": await create_key(sessions, "bob", ["publisher"]),
            "decide": await create_key(sessions, "load", ["decide"]),
        }
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`retail-policy serve --workers 2` on a database holding versions 1-3 of one ruleset (1 active)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'hot.db'}"
    else:
        url = request.getfixturevalue("postgres_server_database")
        asyncio.run(reset_postgres(url))
    keys = asyncio.run(prepare(url))
    (tmp_path / "rulesets").mkdir()
    env = {"DATABASE_URL": url, "RULESETS_DIR": str(tmp_path / "rulesets"), "RULES_ENGINE": "durable"}
    with running_server(tmp_path, env=env, workers=2) as base:
        yield base, keys


def load(base: str, key: str, stop: threading.Event, samples: list[Sample], lock: threading.Lock) -> None:
    """Evaluate the active ruleset until told to stop (or the hard stop), one new connection per request."""
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_keepalive_connections=0)
    give_up = time.monotonic() + HARD_STOP_SECONDS
    with httpx.Client(limits=limits, timeout=10.0) as client:
        while not stop.is_set() and time.monotonic() < give_up:
            sent = time.monotonic()
            try:
                response = client.post(
                    f"{base}/v1/rulesets/{NAME}/evaluate",
                    json={"facts": SMALL_TRANSFER, "trace": "none"},
                    headers=headers,
                )
                body = response.json()
                version = body["ruleset"]["version"] if response.status_code == 200 else None
                error = None
                if response.status_code != 200:
                    error = f"HTTP {response.status_code}: {response.text[:200]}"
                elif body["result"]["reason"] != f"v{version}":
                    error = f"mixed: named v{version} but decided {body['result']['reason']}"
                served = body.get("served", {})
                received = time.monotonic()
                sample = Sample(sent, received, served.get("pid"), version, error, served.get("generation"))
            except Exception as exc:  # any transport failure is a failed request
                sample = Sample(sent, time.monotonic(), None, None, f"{type(exc).__name__}: {exc}")
            with lock:
                samples.append(sample)


def switch_latency(samples: list[Sample], since: float, until: float, version: int, pid: int) -> float | None:
    """Seconds from `since` to the first response of `pid` naming `version`, sent after `since`."""
    for sample in sorted(samples, key=lambda s: s.sent):
        if since <= sample.sent < until and sample.pid == pid and sample.version == version:
            return sample.sent - since
    return None


def wait_until(condition: Callable[[], bool], limit: float) -> bool:
    """Polls `condition` until it holds or `limit` seconds have passed; answers whether it held."""
    give_up = time.monotonic() + limit
    while not condition():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.02)
    return True


def switched(samples: list[Sample], lock: threading.Lock, at: float, version: int, pids: set[int]) -> bool:
    """Every worker has answered with `version` since `at`, then answered AFTER_SWITCH_SAMPLES more."""
    with lock:
        recent = [s for s in samples if s.sent >= at and s.pid is not None]
    for pid in pids:
        first = min((s.received for s in recent if s.pid == pid and s.version == version), default=None)
        if first is None or sum(1 for s in recent if s.pid == pid and s.sent > first) < AFTER_SWITCH_SAMPLES:
            return False
    return True


def test_every_worker_switches_without_a_failed_or_mixed_request(server: tuple[str, dict[str, str]]) -> None:
    base, keys = server
    samples: list[Sample] = []
    lock = threading.Lock()
    stop = threading.Event()
    threads = [
        threading.Thread(target=load, args=(base, keys["decide"], stop, samples, lock), daemon=True)
        for _ in range(LOAD_THREADS)
    ]
    publisher = {"Authorization": f"Bearer {keys['publisher']}"}
    # (request sent, response received, version made active): the change commits in between.
    changes: list[tuple[float, float, int]] = []
    for thread in threads:
        thread.start()
    try:
        # new connections are spread over the workers by the kernel: wait until both have answered
        assert wait_until(lambda: len({s.pid for s in list(samples) if s.pid is not None}) >= 2, 30), (
            "both workers should answer under load"
        )
        pids = {s.pid for s in list(samples) if s.pid is not None}
        for path, expected in (
            (f"/v1/rulesets/{NAME}/versions/2/publish", 2),
            (f"/v1/rulesets/{NAME}/versions/3/publish", 3),
            (f"/v1/rulesets/{NAME}/rollback", 2),
        ):
            asked = time.monotonic()
            response = httpx.post(f"{base}{path}", headers=publisher, timeout=30)
            assert response.status_code == 200, response.text
            changes.append((asked, time.monotonic(), expected))
            # bounded well past the switch limit; the limit itself is asserted below, from the samples
            assert wait_until(
                functools.partial(switched, samples, lock, asked, expected, pids), 4 * SWITCH_LIMIT_SECONDS
            ), f"not every worker answered with v{expected}"
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)

    failures = [s.error for s in samples if s.error is not None]
    assert not failures, f"{len(failures)} of {len(samples)} requests failed, e.g. {failures[:3]}"
    assert {s.pid for s in samples} == pids, "a third process answered"

    latencies: list[float] = []
    # A window ends when the next change is requested: from then on either version is correct.
    bounds = [*(asked for asked, _, _ in changes[1:]), float("inf")]
    for (_, at, version), until in zip(changes, bounds, strict=True):
        for pid in pids:
            window = [s for s in samples if s.pid == pid and at <= s.sent < until]
            first = min(s.received for s in window if s.version == version)
            stale = [(round(s.sent - at, 2), s.version, s.generation) for s in window if s.sent > first]
            stale = [entry for entry in stale if entry[1] != version]
            assert not stale, (
                f"worker {pid} served {stale[:5]} (seconds after, version, generation) after it served v{version}"
            )
            latency = switch_latency(samples, at, until, version, pid)
            assert latency is not None and latency <= SWITCH_LIMIT_SECONDS
            latencies.append(latency)
    print(
        f"\n{len(samples)} requests, 0 failed; worst switch {max(latencies):.2f} s over {len(changes)} changes"
    )
