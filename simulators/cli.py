"""`simulate`: replay a scenario through the decision code and write the KPI JSON and the HTML report.

`register(subparsers)` adds the command to the `retail-policy` CLI; `main()` runs it alone
(`python -m simulators simulate ...`). The heavy modules are imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", help="scenario YAML file (see docs/simulator.md)")
    parser.add_argument(
        "--ruleset",
        action="append",
        default=[],
        metavar="NAME@VERSION_OR_PATH",
        help="a ruleset version to compare (a YAML path, NAME@PATH, or NAME@VERSION from the ruleset store; "
        "comma-join several for one run); "
        "repeat for more runs. Without it, one run with the scenario's and the shipped rulesets",
    )
    parser.add_argument(
        "--events", metavar="FILE", help="replay this event log (.jsonl or .csv) instead of generating"
    )
    parser.add_argument(
        "--record", metavar="FILE", help="also write the replayed event stream (.jsonl or .csv)"
    )
    parser.add_argument(
        "--max-skipped",
        metavar="SHARE",
        help="refuse (exit 2) a replayed log that skips more than this share of its events, as a fraction "
        "(0.05) or a percentage (5%%); default: the scenario's max_skipped_share (1%%)",
    )
    parser.add_argument(
        "--out", metavar="DIR", default="var/simulations", help="where kpis.json and report.html go"
    )
    parser.add_argument("--engine", choices=["durable", "python"], default="python", help="rule engine")
    parser.add_argument("--seed", type=int, help="override the scenario's seed")
    parser.add_argument("--no-replenishment", action="store_true",
                        help="no reorder reviews (the scenario's replenishment.enabled: false)")  # fmt: skip
    parser.add_argument("--no-memo", action="store_true", help="evaluate the rulesets for every decision")
    parser.add_argument(
        "--seeds",
        metavar="LIST",
        help="run every version on each of these seeds (7, 1-20 or 1-5,9) and report each KPI's mean and "
        "spread over them",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="run the versions and seeds on N processes (default 1)",
    )
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar on stderr (default: when stderr is a terminal)")  # fmt: skip


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate", help="replay a promotion scenario and compare ruleset versions"
    )
    add_arguments(parser)
    parser.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    from simulators.events import EventLogError, write_events
    from simulators.kpis import encode
    from simulators.multirun import SeedsError, parse_seeds
    from simulators.policy import PolicyError
    from simulators.progress import ProgressBar
    from simulators.report import render_report
    from simulators.scenario import ScenarioError, load_scenario
    from simulators.screen import TooManySkipped, load_stream, parse_share, skipped_lines
    from simulators.simulation import Options, simulate
    from simulators.versions import baseline, resolve, store_lookup

    try:
        seeds = _seeds(args, parse_seeds)
    except SeedsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if seeds is not None:
        args.seed = seeds[0]

    scenario_path = Path(args.scenario)
    try:
        max_share = None if args.max_skipped is None else parse_share(args.max_skipped)
    except ValueError as exc:
        print(f"error: --max-skipped {exc}", file=sys.stderr)
        return 2
    try:
        scenario = load_scenario(scenario_path)
        if args.seed is not None:
            scenario.seed = args.seed
        if args.no_replenishment:
            scenario.replenishment.enabled = False
        world = scenario.build()
        screened, source = load_stream(world, args.events, max_share)
        base = baseline(scenario.rulesets, scenario_path.parent)
        version_sets = resolve(list(args.ruleset), base, store_lookup(_database()))
    except EventLogError as exc:
        print(f"error: {args.events}: {exc}" if exc.line else f"error: {exc}", file=sys.stderr)
        return 2
    except (ScenarioError, PolicyError, TooManySkipped) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.record:
        try:
            write_events(screened.events, args.record, world.start)
        except OSError as exc:
            print(f"error: cannot write {args.record}: {exc.strerror}", file=sys.stderr)
            return 2
    options = Options(engine=args.engine, memo=not args.no_memo)
    if (seeds is not None and len(seeds) > 1) or args.jobs > 1:
        return _simulate_many(args, scenario, seeds or [scenario.seed], version_sets, options, source)
    document = simulate(
        world,
        screened.events,
        version_sets,
        options,
        events_source=source,
        progress=lambda label: ProgressBar(label, enabled=args.progress),
        screened=screened,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kpis.json").write_bytes(encode(document))
    (out / "report.html").write_text(render_report(document), encoding="utf-8")
    print(summary(document))
    print("\n".join(skipped_lines(document)))
    print(f"wrote {out / 'kpis.json'} and {out / 'report.html'}")
    broken = [run for run in document["runs"] if not run["conservation"]["holds"]]
    return 1 if broken else 0


def _seeds(args: argparse.Namespace, parse: Any) -> list[int] | None:
    """The seeds of `--seeds` (None without it); `--seed` with `--seeds`, several seeds with `--record` and
    a `--jobs` below 1 are refused."""
    from simulators.multirun import SeedsError

    if args.jobs < 1:
        raise SeedsError(f"--jobs {args.jobs}: give at least 1 process")
    if args.seeds is None:
        return None
    if args.seed is not None:
        raise SeedsError("--seed and --seeds: give one of them")
    seeds: list[int] = parse(args.seeds)
    if len(seeds) > 1 and args.record:
        raise SeedsError("--record with several seeds: record the stream of one seed at a time")
    return seeds


def _simulate_many(
    args: argparse.Namespace,
    scenario: Any,
    seeds: list[int],
    version_sets: list[Any],
    options: Any,
    source: str,
) -> int:
    """Every version on every seed, on `--jobs` processes: the KPIs of the first seed in full, and with
    several seeds each KPI's mean and spread per version."""
    from simulators.kpis import encode
    from simulators.multirun import TaskResult, broken_runs, many_summary, run_many
    from simulators.report import render_report
    from simulators.screen import skipped_lines

    show = sys.stderr.isatty() if args.progress is None else args.progress

    def done(result: TaskResult, finished: int, total: int) -> None:
        if show:
            labels = ", ".join(sorted({run["label"] for run in result.document["runs"]}))
            print(f"[{finished}/{total}] seed {result.seed}: {labels}", file=sys.stderr, flush=True)

    document = run_many(
        scenario,
        seeds,
        version_sets,
        options,
        jobs=args.jobs,
        events_path=args.events,
        events_source=source,
        done=done,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kpis.json").write_bytes(encode(document))
    (out / "report.html").write_text(render_report(document), encoding="utf-8")
    if len(seeds) > 1:
        print(f"seed {seeds[0]}:")
    print(summary(document))
    if len(seeds) > 1:
        print(many_summary(document))
    print("\n".join(skipped_lines(document)))
    print(f"wrote {out / 'kpis.json'} and {out / 'report.html'}")
    broken = broken_runs(document)
    for run in broken:
        print(f"conservation check failed: {run}", file=sys.stderr)
    return 1 if broken else 0


def _database() -> Any:
    from service.settings import get_settings

    return get_settings().database


def summary(document: dict[str, Any]) -> str:
    """A plain-text table of the main KPIs, one row per run."""
    header = f"{'run':<44} {'orders':>8} {'fill':>7} {'lost':>7} {'oversold':>8} {'splits':>7} {'km':>7}"
    rows = [header]
    for run in document["runs"]:
        k = run["kpis"]
        title = f"{run['label']} / {run['view']}"
        rows.append(
            f"{title[:44]:<44} {k['orders']:>8} {k['fill_rate'] * 100:>6.1f}% {k['lost_units']:>7} "
            f"{k['oversold_units']:>8} {k['split_shipments']:>7} {k['mean_distance_km']:>7.1f}"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
