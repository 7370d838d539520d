"""A dry run never holds the server's event loop: `/health/live` answers while a hostile one is refused.

The real server (one worker process) is probed back to back over HTTP for as long as the dry run is in
flight, so that some probe is waiting whenever the dry run would hold the loop.
"""

from __future__ import annotations

import asyncio
import time
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
from tests.unit.lifecycle.samples import NAME, transfer_yaml

pytestmark = pytest.mark.slow

# what the liveness probe of a worker may take: the fault this guards against held the loop for seconds;
# a probe on a loaded 2-core machine (a test suite and benchmarks beside it) has taken 0.12 s without it
LIVE_BUDGET_SECONDS = 1.0


def rounding_yaml() -> str:
    """The transfer ruleset whose promotion rule rounds to as many digits as there are promotions."""
    sla = '"= ceil(round(source.open_promotions, 0 - source.open_promotions))"'
    return transfer_yaml("v1").replace("sla_hours: 4,", f"sla_hours: {sla},")


async def prepare(url: str) -> str:
    """Migrate, store the draft, and return an author's key."""
    engine = create_engine(DatabaseSettings(url=url))
    try:
        await upgrade(engine)
        sessions = session_factory(engine)
        with TrialWorker() as trials:
            await lifecycle.create_version(sessions, trials, NAME, rounding_yaml(), "alice")
        return await create_key(sessions, "alice", ["author"])
    finally:
        await engine.dispose()


async def probe_while_dry_running(base: str, key: str) -> tuple[httpx.Response, list[float]]:
    url = f"/v1/rulesets/{NAME}/versions/1/evaluate"
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, timeout=60.0) as client:
        # a harmless dry run first, so that starting the trial process is not what the probes measure
        harmless = {"transfer": {"value": 10.0}, "source": {"open_promotions": 1}}
        assert (await client.post(url, json={"facts": harmless}, headers=headers)).status_code == 200
        hostile = {"transfer": {"value": 10.0}, "source": {"open_promotions": 10_000_000}}
        dry_run = asyncio.create_task(client.post(url, json={"facts": hostile}, headers=headers))
        latencies: list[float] = []
        while not (dry_run.done() and latencies):
            started = time.perf_counter()
            live = await client.get("/health/live")
            latencies.append(time.perf_counter() - started)
            assert live.status_code == 200
        return await dry_run, latencies


def test_live_answers_within_its_budget_while_a_hostile_dry_run_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'liveness.db'}"
    key = asyncio.run(prepare(url))
    (tmp_path / "rulesets").mkdir()
    env = {"DATABASE_URL": url, "RULESETS_DIR": str(tmp_path / "rulesets")}
    with running_server(tmp_path, env=env) as base:
        response, latencies = asyncio.run(probe_while_dry_running(base, key))
    # computed in place, round(10**7, -10**7) held the loop for seconds, and the probe waiting with it
    assert max(latencies) < LIVE_BUDGET_SECONDS, latencies
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    error = response.json()["errors"][0]
    assert (error["field"], error["rule_id"], error["path"]) == (
        "facts",
        "promo-at-source",
        "rules[1].then.sla_hours",
    )
    assert "round() takes digits from -12 to 12, got -10000000" in error["reason"]
