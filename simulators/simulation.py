"""One simulation: a scenario, an event stream, the version sets to compare, and the KPI document.

Every version set is run on the identical stream, and, when the scenario has batch-synced channels, twice:
once with the channels' configured stock views ("fragmented") and once with every channel on real-time
reservations ("realtime"), so that the cost of a fragmented estate shows next to the same demand served
from live stock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from simulators.events import Event
from simulators.kpis import kpi_document
from simulators.runner import ProgressFn, RunResult, run_once
from simulators.scenario import World
from simulators.screen import Screened, screen
from simulators.versions import VersionSet

ProgressFactory = Callable[[str], ProgressFn | None]


@dataclass(frozen=True)
class Options:
    engine: str = "python"
    memo: bool = True
    views: tuple[str, ...] | None = None


def views_for(world: World) -> tuple[str, ...]:
    if any(channel.view.mode == "batch" for channel in world.channels):
        return ("fragmented", "realtime")
    return ("realtime",)


def run_all(
    world: World,
    events: Sequence[Event],
    version_sets: Sequence[VersionSet],
    options: Options,
    progress: ProgressFactory | None = None,
) -> list[RunResult]:
    results: list[RunResult] = []
    for version_set in version_sets:
        for view in options.views or views_for(world):
            policies = version_set.policy_set(options.engine, memo=options.memo)
            label = f"{version_set.label} / {view}"
            result = run_once(
                world,
                events,
                policies,
                view="configured" if view == "fragmented" else "realtime",
                progress=progress(label) if progress else None,
            )
            result.view = view
            results.append(result)
    return results


def simulate(
    world: World,
    events: Sequence[Event],
    version_sets: Sequence[VersionSet],
    options: Options,
    *,
    events_source: str = "generated",
    progress: ProgressFactory | None = None,
    screened: Screened | None = None,
) -> dict[str, Any]:
    """Run every version set on the stream and make the KPI document. `screened`: the stream already
    screened (`simulators.screen.screen`), whose `events` are then the ones run; without it the stream is
    screened here, so that what no run can replay is counted once, by type and reason."""
    if screened is None:
        screened = screen(world, events)
    results = run_all(world, screened.events, version_sets, options, progress)
    return kpi_document(
        world,
        screened.events,
        results,
        engine=options.engine,
        events_source=events_source,
        read=screened.read,
        skipped=screened.skipped,
    )
