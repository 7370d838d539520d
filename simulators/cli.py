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
        "--out", metavar="DIR", default="var/simulations", help="where kpis.json and report.html go"
    )
    parser.add_argument("--engine", choices=["durable", "python"], default="python", help="rule engine")
    parser.add_argument("--seed", type=int, help="override the scenario's seed")
    parser.add_argument("--no-replenishment", action="store_true",
                        help="no reorder reviews (the scenario's replenishment.enabled: false)")  # fmt: skip
    parser.add_argument("--no-memo", action="store_true", help="evaluate the rulesets for every decision")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bar on stderr (default: when stderr is a terminal)")  # fmt: skip


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate", help="replay a promotion scenario and compare ruleset versions"
    )
    add_arguments(parser)
    parser.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    from simulators.events import EventLogError, read_events, write_events
    from simulators.generator import generate_events
    from simulators.kpis import encode
    from simulators.policy import PolicyError
    from simulators.progress import ProgressBar
    from simulators.report import render_report
    from simulators.scenario import ScenarioError, load_scenario
    from simulators.simulation import Options, simulate
    from simulators.versions import baseline, resolve, store_lookup

    scenario_path = Path(args.scenario)
    try:
        scenario = load_scenario(scenario_path)
        if args.seed is not None:
            scenario.seed = args.seed
        if args.no_replenishment:
            scenario.replenishment.enabled = False
        world = scenario.build()
        if args.events:
            events = read_events(args.events, world.start)
            source = Path(args.events).name
        else:
            events = generate_events(world)
            source = "generated"
        base = baseline(scenario.rulesets, scenario_path.parent)
        version_sets = resolve(list(args.ruleset), base, store_lookup(_database()))
    except (ScenarioError, EventLogError, PolicyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.record:
        write_events(events, args.record, world.start)
    options = Options(engine=args.engine, memo=not args.no_memo)
    document = simulate(
        world,
        events,
        version_sets,
        options,
        events_source=source,
        progress=lambda label: ProgressBar(label, enabled=args.progress),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kpis.json").write_bytes(encode(document))
    (out / "report.html").write_text(render_report(document), encoding="utf-8")
    print(summary(document))
    print(f"wrote {out / 'kpis.json'} and {out / 'report.html'}")
    broken = [run for run in document["runs"] if not run["conservation"]["holds"]]
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
