"""Hot switch: two uvicorn worker processes under constant load while versions are published.

Every response must name exactly one version (and carry that version's result), none may fail, and
every worker must serve a newly published version within 5 seconds of the publish.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.db.engine import create_engine, session_factory
from service.db.migrate import upgrade
from service.rules import lifecycle
from service.security.keys import create_key
from service.settings import DatabaseSettings
from tests.services import free_port
from tests.unit.lifecycle.samples import NAME, SMALL_TRANSFER, transfer_yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SWITCH_LIMIT_SECONDS = 5.0
SETTLE_SECONDS = 6.5
LOAD_THREADS = 4
HARD_STOP_SECONDS = 90.0


@dataclass(frozen=True)
class Sample:
    sent: float
    pid: int | None
    version: int | None
    error: str | None
    generation: int | None = None


async def prepare(url: str) -> dict[str, str]:
    """Migrate, store versions 1-3 (1 published), and create the keys the test uses."""
    engine = create_engine(DatabaseSettings(url=url))
    try:
        await upgrade(engine)
        sessions = session_factory(engine)
        for marker in ("v1", "v2", "v3"):
            await lifecycle.create_version(sessions, NAME, transfer_yaml(marker), "alice")
        await lifecycle.publish(sessions, NAME, 1, "bob")
        return {
            "publisher": await create_key(sessions, "bob", ["publisher"]),
            "decide": await create_key(sessions, "load", ["decide"]),
        }
    finally:
        await engine.dispose()


def wait_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/health/ready", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready:\n{log.read_text()}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hot.db'}"
    keys = asyncio.run(prepare(url))
    (tmp_path / "rulesets").mkdir()
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "RULESETS_DIR": str(tmp_path / "rulesets"),
        "RETAIL_POLICY_VAR": str(tmp_path / "var"),
        "AUTO_MIGRATE": "0",
        "RULES_ENGINE": "durable",
    }
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "tests.unit.lifecycle.apps:create_rules_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "2",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, process, log)
            yield base, keys
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


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
                sample = Sample(sent, served.get("pid"), version, error, served.get("generation"))
            except Exception as exc:  # any transport failure is a failed request
                sample = Sample(sent, None, None, f"{type(exc).__name__}: {exc}")
            with lock:
                samples.append(sample)


def switch_latency(samples: list[Sample], since: float, until: float, version: int, pid: int) -> float | None:
    """Seconds from `since` to the first response of `pid` naming `version`, sent after `since`."""
    for sample in sorted(samples, key=lambda s: s.sent):
        if since <= sample.sent < until and sample.pid == pid and sample.version == version:
            return sample.sent - since
    return None


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
        time.sleep(1.5)
        for path, expected in (
            (f"/v1/rulesets/{NAME}/versions/2/publish", 2),
            (f"/v1/rulesets/{NAME}/versions/3/publish", 3),
            (f"/v1/rulesets/{NAME}/rollback", 2),
        ):
            asked = time.monotonic()
            response = httpx.post(f"{base}{path}", headers=publisher, timeout=30)
            assert response.status_code == 200, response.text
            changes.append((asked, time.monotonic(), expected))
            time.sleep(SETTLE_SECONDS)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)

    failures = [s.error for s in samples if s.error is not None]
    assert not failures, f"{len(failures)} of {len(samples)} requests failed, e.g. {failures[:3]}"
    pids = {s.pid for s in samples}
    assert len(pids) == 2, f"expected both workers to answer, saw {pids}"

    latencies: list[float] = []
    # A window ends when the next change is requested: from then on either version is correct.
    bounds = [*(asked for asked, _, _ in changes[1:]), float("inf")]
    for (_, at, version), until in zip(changes, bounds, strict=True):
        for pid in pids:
            assert pid is not None
            late = [s for s in samples if s.pid == pid and at + SWITCH_LIMIT_SECONDS <= s.sent < until]
            assert late, f"worker {pid} answered nothing after the switch to v{version} settled"
            stale = [(round(s.sent - at, 2), s.version, s.generation) for s in late if s.version != version]
            assert not stale, (
                f"worker {pid} served {stale[:5]} (seconds after, version, generation) after v{version}"
            )
            latency = switch_latency(samples, at, until, version, pid)
            assert latency is not None and latency <= SWITCH_LIMIT_SECONDS
            latencies.append(latency)
    print(
        f"\n{len(samples)} requests, 0 failed; worst switch {max(latencies):.2f} s over {len(changes)} changes"
    )
