"""Many runs at once: every version set on every seed, across processes, and each KPI's spread over seeds.

`parse_seeds("1-20")` reads the `--seeds` argument. `run_many` runs one task per (seed, version set) (each
task builds the seed's world and event stream, then runs the version set on every stock view), on
`jobs` processes, and assembles the KPI document in a fixed order, so that the document does not depend
on how many processes ran it or in which order they finished. With more than one seed the document also
holds `per_seed` (every run's KPIs per seed), `aggregate` (per run, each KPI's mean, standard deviation,
minimum and maximum over the seeds) and `comparisons` (each version against the first one on the same
stock view: the difference of the means, the seed-to-seed spread, and whether the difference is larger
than that spread).
"""

from __future__ import annotations

import math
import multiprocessing
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec

from simulators.scenario import Scenario, World
from simulators.screen import load_stream
from simulators.simulation import Options, simulate
from simulators.versions import VersionSet

MAX_SEEDS = 10_000
PLACES = 4
# the KPIs the plain-text summary shows, with their labels and kinds
SUMMARY_KPIS: tuple[tuple[str, str, str], ...] = (
    ("orders", "orders and till sales", "int"),
    ("fill_rate", "fill rate", "pct"),
    ("lost_units", "lost units", "int"),
    ("oversold_units", "oversold units", "int"),
    ("split_shipments", "split shipments", "int"),
    ("mean_distance_km", "mean distance km", "float"),
)


class SeedsError(ValueError):
    """A `--seeds` argument that is not a list of whole numbers and ranges."""


def parse_seeds(text: str) -> list[int]:
    """`7`, `1-20` or a comma-joined list of both (`1-5,9`): the seeds in the order given, each once."""
    seeds: list[int] = []
    seen: set[int] = set()
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise SeedsError("--seeds: give a seed (7), a range (1-20) or a list (1-5,9)")
    for part in parts:
        if not part:
            raise SeedsError(f"--seeds {text}: an empty item between commas")
        first, dash, last = part.partition("-")
        if not _whole(first) or (dash and not _whole(last)):
            raise SeedsError(
                f"--seeds {text}: {part!r} is not a seed or a range of seeds "
                "(whole numbers from 0, e.g. 7 or 1-20)"
            )
        low = int(first)
        high = int(last) if dash else low
        if high < low:
            raise SeedsError(f"--seeds {text}: the range {part} ends before it starts")
        if len(seen) + (high - low + 1) > MAX_SEEDS:
            raise SeedsError(f"--seeds {text}: more than {MAX_SEEDS:,} seeds")
        for seed in range(low, high + 1):
            if seed not in seen:
                seen.add(seed)
                seeds.append(seed)
    return seeds


def _whole(text: str) -> bool:
    return text.isascii() and text.isdigit()


def build_world(scenario: Scenario, seed: int) -> World:
    """The scenario's world with `seed` in place of its own (store coordinates and the stream draw on it)."""
    return msgspec.structs.replace(scenario, seed=seed).build()


@dataclass(frozen=True)
class Task:
    seed: int
    version: int  # the version set's index
    scenario: Scenario
    events_path: str | None
    version_set: VersionSet
    options: Options
    events_source: str


@dataclass(frozen=True)
class TaskResult:
    seed: int
    version: int
    document: dict[str, Any]  # the KPI document of the version set on the seed (`simulate`'s)


def run_task(task: Task) -> TaskResult:
    """One version set on one seed, every stock view (a process pool's unit of work): the same document
    `simulate` makes for them."""
    world = build_world(task.scenario, task.seed)
    # the share of a log's events that may be skipped was checked before the runs, on the first seed's
    # world; each task counts its own skips
    screened, _ = load_stream(world, task.events_path, 1.0)
    document = simulate(
        world,
        screened.events,
        [task.version_set],
        task.options,
        events_source=task.events_source,
        screened=screened,
    )
    return TaskResult(task.seed, task.version, document)


Done = Callable[[TaskResult, int, int], None]


def run_many(
    scenario: Scenario,
    seeds: Sequence[int],
    version_sets: Sequence[VersionSet],
    options: Options,
    *,
    jobs: int = 1,
    events_path: str | None = None,
    events_source: str = "generated",
    done: Done | None = None,
) -> dict[str, Any]:
    """The KPI document of every version set on every seed, run on `jobs` processes (1: in this one).

    `done(result, finished, total)` is told of every task as it ends. The document's `scenario`, `events`
    and `runs` are those of the first seed; with several seeds it adds `seeds`, `per_seed`, `aggregate`
    and `comparisons`."""
    tasks = [
        Task(seed, index, scenario, events_path, version_set, options, events_source)
        for seed in seeds
        for index, version_set in enumerate(version_sets)
    ]
    finished: dict[tuple[int, int], TaskResult] = {}

    def collect(result: TaskResult) -> None:
        finished[(result.seed, result.version)] = result
        if done is not None:
            done(result, len(finished), len(tasks))

    if jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            collect(run_task(task))
    else:
        # fork where there is one: the workers start without importing the service again, and this
        # process runs no threads when the pool starts
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context) as pool:
            for result in pool.map(run_task, tasks):
                collect(result)
    per_seed = []
    for seed in seeds:
        ordered = [finished[(seed, index)].document for index in range(len(version_sets))]
        runs = [run for document in ordered for run in document["runs"]]
        per_seed.append((seed, ordered[0], runs))
    # the first seed's document, with the runs of every version set
    document = dict(per_seed[0][1])
    document["runs"] = per_seed[0][2]
    if len(seeds) > 1:
        document.update(seed_statistics([(seed, head["events"], runs) for seed, head, runs in per_seed]))
    return document


def seed_statistics(
    per_seed: Sequence[tuple[int, dict[str, Any], Sequence[dict[str, Any]]]],
) -> dict[str, Any]:
    """`seeds`, `per_seed`, `aggregate` and `comparisons` of runs repeated on several seeds; `per_seed` is
    (seed, event counts, runs) with the runs in the same order on every seed."""
    table = [
        {
            "seed": seed,
            "events": dict(counts),
            "runs": [
                {
                    "label": run["label"],
                    "view": run["view"],
                    "kpis": run["kpis"],
                    "conservation_holds": bool(run["conservation"]["holds"]),
                }
                for run in runs
            ],
        }
        for seed, counts, runs in per_seed
    ]
    aggregate = aggregate_runs(table)
    return {
        "seeds": [seed for seed, _, _ in per_seed],
        "per_seed": table,
        "aggregate": aggregate,
        "comparisons": compare_runs(table, aggregate),
    }


def _numbers(kpis: dict[str, Any]) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in kpis.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def spread(values: Sequence[float]) -> dict[str, float | int]:
    """`n`, `mean`, `sd` (the sample standard deviation; 0 for one value), `min` and `max`."""
    n = len(values)
    mean = statistics.fmean(values) if n else 0.0
    sd = statistics.stdev(values) if n > 1 else 0.0
    return {
        "n": n,
        "mean": round(mean, PLACES),
        "sd": round(sd, PLACES),
        "min": round(min(values), PLACES) if n else 0.0,
        "max": round(max(values), PLACES) if n else 0.0,
    }


def _series(table: Sequence[dict[str, Any]], index: int) -> dict[str, list[float]]:
    """Each KPI's values over the seeds for the run at `index` (seeds where it has no value are left out)."""
    values: dict[str, list[float]] = {}
    for entry in table:
        for key, value in _numbers(entry["runs"][index]["kpis"]).items():
            values.setdefault(key, []).append(value)
    return values


def aggregate_runs(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run (label and view), each numeric KPI's spread over the seeds."""
    if not table:
        return []
    out = []
    for index, run in enumerate(table[0]["runs"]):
        kpis = {key: spread(values) for key, values in sorted(_series(table, index).items())}
        out.append({"label": run["label"], "view": run["view"], "seeds": len(table), "kpis": kpis})
    return out


def verdict(difference: float, noise: float, *, same_on_every_seed: bool = False) -> str:
    """`same` (equal on every seed), `within noise` (the difference of the means is no larger than the
    seed-to-seed spread) or `larger than noise`."""
    if same_on_every_seed:
        return "same"
    return "within noise" if abs(difference) <= noise else "larger than noise"


def compare_runs(
    table: Sequence[dict[str, Any]], aggregate: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each run of another version against the first version's run on the same stock view: per KPI, the
    difference of the means, the seed-to-seed spread (the larger of the two standard deviations), the
    verdict, and on how many seeds the version was higher, lower or the same."""
    if not table:
        return []
    runs = table[0]["runs"]
    first_label = runs[0]["label"]
    base_of = {run["view"]: i for i, run in reversed(list(enumerate(runs))) if run["label"] == first_label}
    out = []
    for index, run in enumerate(runs):
        base = base_of.get(run["view"])
        if run["label"] == first_label or base is None:
            continue
        kpis: dict[str, Any] = {}
        mine, theirs = aggregate[index]["kpis"], aggregate[base]["kpis"]
        for key in sorted(set(mine) & set(theirs)):
            higher = lower = same = 0
            for entry in table:
                a = _numbers(entry["runs"][base]["kpis"]).get(key)
                b = _numbers(entry["runs"][index]["kpis"]).get(key)
                if a is None or b is None:
                    continue
                higher += b > a
                lower += b < a
                same += b == a
            difference = round(float(mine[key]["mean"]) - float(theirs[key]["mean"]), PLACES)
            noise = max(float(mine[key]["sd"]), float(theirs[key]["sd"]))
            kpis[key] = {
                "difference": difference,
                "spread": round(noise, PLACES),
                "verdict": verdict(difference, noise, same_on_every_seed=higher + lower == 0),
                "seeds_higher": higher,
                "seeds_lower": lower,
                "seeds_same": same,
            }
        out.append({"label": run["label"], "view": run["view"], "against": first_label, "kpis": kpis})
    return out


def _fmt(value: float, kind: str) -> str:
    if kind == "pct":
        return f"{value * 100:.2f} %"
    if kind == "int":  # a mean of counts: whole when it is, else to two places
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:,.2f}"


def _fmt_diff(value: float, kind: str) -> str:
    if kind == "pct":
        return f"{value * 100:+.2f} points"
    return f"{value:+,.2f}"


def seeds_text(seeds: Sequence[int]) -> str:
    """`1-20` for a run of consecutive seeds, else the list."""
    if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)


def many_summary(document: dict[str, Any]) -> str:
    """The plain-text spread of the main KPIs per run, and each version's differences to the first."""
    seeds = document["seeds"]
    lines = [
        f"{len(seeds)} seeds ({seeds_text(seeds)}); each KPI as mean ± standard deviation "
        "over the seeds [min - max]"
    ]
    for run in document["aggregate"]:
        lines.append(f"{run['label']} / {run['view']}")
        for key, label, kind in SUMMARY_KPIS:
            s = run["kpis"].get(key)
            if s is None:
                continue
            sd = f"{s['sd'] * 100:.2f}" if kind == "pct" else f"{s['sd']:,.2f}"
            lines.append(
                f"  {label:<22} {_fmt(s['mean'], kind):>12} ± {sd:<8} "
                f"[{_fmt(s['min'], kind)} - {_fmt(s['max'], kind)}]"
            )
    for comparison in document["comparisons"]:
        n = len(seeds)
        lines.append(
            f"{comparison['label']} / {comparison['view']} against {comparison['against']} / {comparison['view']}"
        )
        for key, label, kind in SUMMARY_KPIS:
            c = comparison["kpis"].get(key)
            if c is None:
                continue
            noise = f"{c['spread'] * 100:.2f} points" if kind == "pct" else f"{c['spread']:,.2f}"
            if c["verdict"] == "same":
                lines.append(f"  {label:<22} {'same':>14}  on every seed")
                continue
            lines.append(
                f"  {label:<22} {_fmt_diff(c['difference'], kind):>14}  seed-to-seed spread {noise}: "
                f"{c['verdict']} (higher on {c['seeds_higher']}, lower on {c['seeds_lower']} of {n} seeds)"
            )
    return "\n".join(lines)


def broken_runs(document: dict[str, Any]) -> list[str]:
    """`seed N: label / view` of every run (on any seed) whose conservation check failed."""
    if "per_seed" not in document:
        return [f"{r['label']} / {r['view']}" for r in document["runs"] if not r["conservation"]["holds"]]
    return [
        f"seed {entry['seed']}: {r['label']} / {r['view']}"
        for entry in document["per_seed"]
        for r in entry["runs"]
        if not r["conservation_holds"]
    ]
