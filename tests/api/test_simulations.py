"""Simulation endpoints: a planner starts a replay, follows it and reads its KPIs and report."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from service.db.models.simulations import SimulationRow
from tests.apiclient import ApiClient, api_client, make_settings

RULESETS = Path(__file__).resolve().parents[1] / "unit" / "simulators" / "rulesets"
SCENARIOS = Path(__file__).resolve().parents[2] / "simulators" / "scenarios"


@pytest.fixture
async def api(sqlite_api: ApiClient) -> ApiClient:
    return sqlite_api


async def finished(api: ApiClient, simulation_id: str, within: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        body: dict[str, Any] = (await api.as_("planner").get(f"/v1/simulations/{simulation_id}")).json()
        if body["status"] in ("done", "failed"):
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"simulation {simulation_id} did not finish in {within} s")


async def stored(api: ApiClient) -> int:
    async with api.session() as session:
        return int((await session.execute(select(func.count()).select_from(SimulationRow))).scalar_one())


async def test_a_planner_starts_a_simulation_and_reads_its_kpis_and_report(api: ApiClient) -> None:
    variant = (RULESETS / "dc-only.yaml").read_text()
    response = await api.as_("planner").post(
        "/v1/simulations", json={"scenario": "small", "versions": [[{"yaml": variant}]], "seed": 3}
    )
    assert response.status_code == 202
    simulation_id = response.json()["id"]
    assert response.headers["location"] == f"/v1/simulations/{simulation_id}"
    body = await finished(api, simulation_id)
    assert body["status"] == "done", body["error"]
    assert body["progress"] == 1.0
    assert body["kpis"]["scenario"]["seed"] == 3
    assert [run["label"] for run in body["kpis"]["runs"]] == ["dc-only@request", "dc-only@request"]
    assert all(run["conservation"]["holds"] for run in body["kpis"]["runs"])
    report = await api.as_("planner").get(f"/v1/simulations/{simulation_id}/report")
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/html")
    assert "<svg" in report.text


async def test_simulations_need_the_planner_role(api: ApiClient) -> None:
    response = await api.as_("decide").post("/v1/simulations", json={"scenario": "small"})
    assert response.status_code == 403
    assert await stored(api) == 0


async def test_a_bad_scenario_is_refused_with_its_path_and_nothing_is_stored(api: ApiClient) -> None:
    text = (SCENARIOS / "small.yaml").read_text().replace("duration_hours: 48", "duration_hours: -4")
    response = await api.as_("planner").post("/v1/simulations", json={"scenario_yaml": text})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"] == "scenario_yaml.duration_hours"
    assert await stored(api) == 0


async def test_an_unknown_shipped_scenario_is_refused(api: ApiClient) -> None:
    response = await api.as_("planner").post("/v1/simulations", json={"scenario": "../etc/passwd"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "scenario"


async def test_an_unknown_ruleset_version_is_refused(api: ApiClient) -> None:
    response = await api.as_("planner").post(
        "/v1/simulations", json={"scenario": "small", "versions": [[{"name": "nope", "version": 7}]]}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "versions[0][0]"
    assert await stored(api) == 0


async def test_an_unknown_field_in_the_request_is_refused(api: ApiClient) -> None:
    response = await api.as_("planner").post("/v1/simulations", json={"scenario": "small", "speed": "max"})
    assert response.status_code in (400, 422)
    assert "speed" in response.text


async def test_an_unknown_simulation_is_not_found(api: ApiClient) -> None:
    response = await api.as_("planner").get("/v1/simulations/0d6c6c43-0000-4000-8000-000000000000")
    assert response.status_code == 404
    report = await api.as_("planner").get("/v1/simulations/0d6c6c43-0000-4000-8000-000000000000/report")
    assert report.status_code == 404


async def test_a_simulation_cut_short_by_shutdown_is_recorded_as_failed(sqlite_url: str) -> None:
    async with api_client(make_settings(sqlite_url)) as client:
        response = await client.as_("planner").post("/v1/simulations", json={"scenario": "weekend-promo"})
        assert response.status_code == 202
        simulation_id = response.json()["id"]
    async with client.session() as session:
        row = await session.get(SimulationRow, simulation_id)
    assert row is not None
    assert row.status == "failed"
    assert row.error is not None and "shut down" in row.error


async def _orphan(api: ApiClient, simulation_id: str, status: str, beat_age_seconds: float) -> None:
    """A row as a worker that was killed leaves it: queued or running, its heartbeat as old as given."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    async with api.session() as session, session.begin():
        session.add(
            SimulationRow(
                id=simulation_id,
                status=status,
                requested_by="planner",
                request={"scenario": "small"},
                progress=0.4,
                created_at=now - timedelta(seconds=beat_age_seconds + 5),
                heartbeat_at=now - timedelta(seconds=beat_age_seconds),
            )
        )


async def test_a_simulation_whose_worker_died_is_recorded_as_failed(api: ApiClient) -> None:
    await _orphan(api, "00000000-0000-4000-8000-000000000001", "running", beat_age_seconds=120)
    await _orphan(api, "00000000-0000-4000-8000-000000000002", "queued", beat_age_seconds=120)
    await _orphan(api, "00000000-0000-4000-8000-000000000003", "running", beat_age_seconds=5)
    for n in (1, 2):
        body = (
            await api.as_("planner").get(f"/v1/simulations/00000000-0000-4000-8000-00000000000{n}")
        ).json()
        assert body["status"] == "failed"
        assert "stopped before it ended" in body["error"] and body["finished_at"] is not None
    # recorded, not only answered: the row itself says so now
    async with api.session() as session:
        row = await session.get(SimulationRow, "00000000-0000-4000-8000-000000000001")
    assert row is not None and row.status == "failed"
    # a recent heartbeat: its worker (another process) is still running it
    alive = (await api.as_("planner").get("/v1/simulations/00000000-0000-4000-8000-000000000003")).json()
    assert alive["status"] == "running" and alive["progress"] == 0.4


async def test_a_running_simulation_beats_and_writes_its_progress(sqlite_url: str) -> None:
    from service.db.engine import create_engine, session_factory
    from service.db.migrate import upgrade
    from service.settings import DatabaseSettings
    from simulators.jobs import SimulationJobs, SimulationRequest

    engine = create_engine(DatabaseSettings(url=sqlite_url))
    await upgrade(engine)
    sessions = session_factory(engine)
    jobs = SimulationJobs(sessions, heartbeat_seconds=0.05)
    try:
        simulation_id = await jobs.submit(SimulationRequest(scenario="weekend-promo"), "planner")
        beats: set[Any] = set()
        progress: list[float] = []
        deadline = time.monotonic() + 60
        while len(beats) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            async with sessions() as session:
                row = await session.get(SimulationRow, simulation_id)
            assert row is not None and row.status == "running"
            beats.add(row.heartbeat_at)
            progress.append(row.progress)
        assert len(beats) >= 3
        assert progress == sorted(progress)
    finally:
        await jobs.close(grace_seconds=30)
        await engine.dispose()


async def test_simulation_answers_have_the_documented_shape(api: ApiClient) -> None:
    from jsonschema import ValidationError

    from tests.api.test_openapi import _check, _document

    document = await _document(api)
    schema = document["paths"]["/v1/simulations/{simulation_id}"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]
    variant = (RULESETS / "dc-only.yaml").read_text()
    response = await api.as_("planner").post(
        "/v1/simulations", json={"scenario": "small", "versions": [[{"yaml": variant}]], "seed": 5}
    )
    assert response.status_code == 202
    simulation_id = response.json()["id"]
    early = await api.as_("planner").get(f"/v1/simulations/{simulation_id}")
    assert early.status_code == 200
    _check(document, schema, early.json())  # queued or running: no KPIs, no end yet
    done = await finished(api, simulation_id)
    assert done["status"] == "done", done["error"]
    _check(document, schema, done)
    with pytest.raises(ValidationError):  # the check can fail: a progress beyond 1
        _check(document, schema, {**done, "progress": 1.5})
