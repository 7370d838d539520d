"""Simulations asked for over the API: checked before they are accepted, run in a worker thread, recorded.

`SimulationJobs.submit` validates the request (scenario, ruleset versions) and answers at once with an id;
the replay runs on a thread so that the event loop keeps serving, its progress is kept in memory, and its
KPI JSON and HTML report are written to the `simulations` table when it ends.

While it runs, the worker writes a heartbeat (and the progress) to its row every `HEARTBEAT_SECONDS`. A
worker that is killed cannot record the end of its runs, so a queued or running row whose heartbeat is
older than `STALE_SECONDS` is recorded as failed when it is next read, by any worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.base import INTEGER_MAX
from service.db.models.simulations import SimulationRow
from service.errors import FieldError, Invalid
from simulators.events import EventLogError
from simulators.generator import generate_events
from simulators.kpis import encode
from simulators.policy import KINDS, PolicyError, RulesetRef
from simulators.report import render_report
from simulators.scenario import Scenario, ScenarioError, check_generator, load_scenario, parse_scenario
from simulators.simulation import Options, simulate, views_for
from simulators.versions import SHIPPED, VersionSet, baseline

log = logging.getLogger("retail_policy.simulations")

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 60.0
SCENARIO_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


class RulesetChoice(msgspec.Struct, forbid_unknown_fields=True):
    """A ruleset version for one run: `name` and `version` from the ruleset store, or a `yaml` document."""

    name: str | None = None
    version: Annotated[int, msgspec.Meta(ge=1, le=INTEGER_MAX)] | None = None
    yaml: str | None = None


class SimulationRequest(msgspec.Struct, forbid_unknown_fields=True):
    """`scenario` names a shipped scenario (simulators/scenarios/<name>.yaml); `scenario_yaml` is a whole
    scenario document. Each entry of `versions` is one run: the rulesets put in place of the baseline."""

    scenario: str | None = None
    scenario_yaml: str | None = None
    versions: list[list[RulesetChoice]] = msgspec.field(default_factory=list)
    seed: int | None = None
    engine: Literal["durable", "python"] = "python"


@dataclass(frozen=True)
class Prepared:
    scenario: Scenario
    version_sets: list[VersionSet]
    options: Options


def _scenario(request: SimulationRequest) -> Scenario:
    if (request.scenario is None) == (request.scenario_yaml is None):
        raise Invalid(
            "name a shipped scenario or send one",
            [FieldError("scenario", "give exactly one of scenario and scenario_yaml")],
        )
    if request.scenario is not None:
        path = SCENARIOS / f"{request.scenario}.yaml"
        if not SCENARIO_NAME.match(request.scenario) or not path.is_file():
            shipped = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.yaml")))
            raise Invalid("unknown scenario", [FieldError("scenario", f"expected one of {shipped}")])
        scenario = load_scenario(path)
    else:
        try:
            scenario = parse_scenario(request.scenario_yaml or "", source="scenario_yaml")
        except ScenarioError as exc:
            field = "scenario_yaml" + exc.path[1:]
            raise Invalid("the scenario is invalid", [FieldError(field, exc.message)]) from exc
    if request.seed is not None:
        scenario.seed = request.seed
    return scenario


async def _choice(session: AsyncSession, choice: RulesetChoice, field: str) -> tuple[Any, RulesetRef]:
    from service.rules import repository as repo
    from service.rules.language import RulesetError, parse_ruleset, ruleset_sha256

    if choice.yaml is not None:
        if choice.name is not None or choice.version is not None:
            raise Invalid(
                "ambiguous ruleset", [FieldError(field, "give yaml, or name and version, not both")]
            )
        try:
            ruleset = parse_ruleset(choice.yaml, source=field)
        except RulesetError as exc:
            first = exc.problems[0]
            raise Invalid("the ruleset is invalid", [FieldError(f"{field}.yaml", first.message)]) from exc
        return ruleset, RulesetRef(ruleset.kind, ruleset.name, "request", ruleset_sha256(ruleset), "request")
    if choice.name is None or choice.version is None:
        raise Invalid("incomplete ruleset", [FieldError(field, "give yaml, or name and version")])
    record = await repo.get_version(session, choice.name, choice.version)
    if record is None:
        raise Invalid(
            "unknown ruleset version", [FieldError(field, f"no version {choice.version} of {choice.name!r}")]
        )
    try:
        ruleset = parse_ruleset(record.yaml_text, source=f"{choice.name}@{choice.version}")
    except RulesetError as exc:
        raise Invalid("the stored ruleset cannot be read", [FieldError(field, str(exc))]) from exc
    ref = RulesetRef(ruleset.kind, ruleset.name, str(record.version), record.sha256, "store")
    return ruleset, ref


async def prepare(
    request: SimulationRequest, sessions: async_sessionmaker[AsyncSession], shipped_root: Path = SHIPPED
) -> Prepared:
    """Everything a run needs, or `Invalid` naming the field that is wrong."""
    scenario = _scenario(request)
    try:
        scenario.build()
        check_generator(scenario)  # a simulation over HTTP generates its events
        base = baseline(scenario.rulesets, SCENARIOS, shipped_root=shipped_root)
    except (ScenarioError, PolicyError) as exc:
        raise Invalid("the scenario cannot be simulated", [FieldError("scenario", str(exc))]) from exc
    version_sets: list[VersionSet] = []
    async with sessions() as session:
        for i, run in enumerate(request.versions):
            chosen = dict(base.rulesets)
            labels = []
            for j, choice in enumerate(run):
                ruleset, ref = await _choice(session, choice, f"versions[{i}][{j}]")
                if ruleset.kind not in KINDS:
                    raise Invalid(
                        "unknown kind", [FieldError(f"versions[{i}][{j}]", f"kind {ruleset.kind!r}")]
                    )
                chosen[ruleset.kind] = (ruleset, ref)
                labels.append(f"{ref.name}@{ref.version}")
            version_sets.append(VersionSet("+".join(labels) or base.label, chosen))
    if not version_sets:
        version_sets = [base]
    return Prepared(scenario, version_sets, Options(engine=request.engine))


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone-aware columns; every stored time is UTC
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class SimulationStopped(Exception):
    """The worker is shutting down: a running simulation stops at its next progress report."""


class SimulationJobs:
    """The simulations of one worker process: submits, progress, and the record of each."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        shipped_root: Path = SHIPPED,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        stale_seconds: float = STALE_SECONDS,
    ) -> None:
        self.sessions = sessions
        self.shipped_root = shipped_root
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self._progress: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def submit(self, request: SimulationRequest, requested_by: str) -> str:
        prepared = await prepare(request, self.sessions, self.shipped_root)
        simulation_id = str(uuid.uuid4())
        async with self.sessions() as session, session.begin():
            session.add(
                SimulationRow(
                    id=simulation_id,
                    status="queued",
                    requested_by=requested_by,
                    request=msgspec.to_builtins(request),
                    progress=0.0,
                    created_at=_now(),
                    heartbeat_at=_now(),
                )
            )
        self._progress[simulation_id] = 0.0
        task = asyncio.create_task(self._run(simulation_id, prepared))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return simulation_id

    def progress(self, simulation_id: str) -> float | None:
        return self._progress.get(simulation_id)

    async def get(self, simulation_id: str) -> SimulationRow | None:
        """The record; one left queued or running by a worker that stopped beating is recorded as failed."""
        async with self.sessions() as session, session.begin():
            row = await session.get(SimulationRow, simulation_id)
            if row is None or row.status not in ("queued", "running") or simulation_id in self._progress:
                return row
            beat = _aware(row.heartbeat_at or row.created_at)
            if _now() - beat > timedelta(seconds=self.stale_seconds):
                row.status = "failed"
                row.error = (
                    "the worker running this simulation stopped before it ended "
                    f"(last heartbeat {beat.isoformat()})"
                )
                row.finished_at = _now()
            return row

    async def wait(self) -> None:
        """Until every simulation of this worker has ended (for shutdown and tests)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self, grace_seconds: float = 10.0) -> None:
        """Stop running simulations (recorded as failed) and wait for their records to be written."""
        self._stopping = True
        if self._tasks:
            # asyncio.wait, unlike wait_for, never cancels the runs it gives up waiting for
            await asyncio.wait(list(self._tasks), timeout=grace_seconds)

    async def _update(self, simulation_id: str, **values: Any) -> None:
        async with self.sessions() as session, session.begin():
            row = await session.get(SimulationRow, simulation_id)
            if row is not None:
                for key, value in values.items():
                    setattr(row, key, value)

    async def _beat(self, simulation_id: str) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            with contextlib.suppress(Exception):  # a missed beat is retried at the next one
                await self._update(
                    simulation_id, heartbeat_at=_now(), progress=self._progress.get(simulation_id, 0.0)
                )

    async def _run(self, simulation_id: str, prepared: Prepared) -> None:
        await self._update(simulation_id, status="running", heartbeat_at=_now())
        beating = asyncio.create_task(self._beat(simulation_id))
        try:
            document = await asyncio.to_thread(self._simulate, simulation_id, prepared)
            kpis = encode(document).decode()
            report = render_report(document)
        except Exception as exc:  # a failed run is recorded, never raised into the event loop
            beating.cancel()
            if isinstance(exc, (SimulationStopped, ScenarioError, PolicyError, EventLogError)):
                error = str(exc)  # the simulator's own words about the run or its inputs
            else:
                # the exception's words may name hosts or files: they go to the log, the record says where
                log.exception("simulation %s failed", simulation_id)
                error = f"the run failed ({type(exc).__name__}); the server log has the detail for {simulation_id}"
            await self._update(simulation_id, status="failed", error=error, finished_at=_now())
            self._progress.pop(simulation_id, None)
            return
        beating.cancel()
        await self._update(simulation_id, status="done", progress=1.0, kpis=kpis, report=report,
                           finished_at=_now())  # fmt: skip
        self._progress.pop(simulation_id, None)

    def _check_running(self) -> None:
        if self._stopping:
            raise SimulationStopped("the worker shut down before the simulation ended")

    def _simulate(self, simulation_id: str, prepared: Prepared) -> dict[str, Any]:
        self._check_running()
        world = prepared.scenario.build()
        events = generate_events(world)
        self._check_running()
        runs = max(1, len(prepared.version_sets) * len(views_for(world)))
        started = [0]

        def progress_for(_label: str) -> Any:
            index = started[0]
            started[0] += 1

            def report(done: int, total: int) -> None:
                self._check_running()
                share = done / total if total else 1.0
                self._progress[simulation_id] = round(min(1.0, (index + share) / runs), 4)

            return report

        return simulate(world, events, prepared.version_sets, prepared.options, progress=progress_for)
