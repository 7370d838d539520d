"""Order decisions per second in a simulation run of the weekend-promo scenario (120 stores, 2 DCs,
2 dark stores, 50 SKUs, four channels), with the shipped rulesets, one core.

Measured in one process, CPU time of the run only (the event stream is generated once, beforehand):
- the full 72-hour replay with each engine, the ruleset memo on (the default), and with the memo off
  (every decision evaluates its ruleset);
- the first 12 hours with the production allocator called for every order (`--sourcing domain`) against
  the array path, to report the ratio between them.

The rates include everything a run does besides orders (till sales, returns, reorder reviews of every
SKU and location, batch syncs, transfer checks), so they are per order decision, not per allocation.

Run: `make bench`, or `python tests/benchmarks/bench_simulator.py` for the table alone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from simulators.events import Event
from simulators.generator import generate_events
from simulators.runner import RunResult, run_once
from simulators.scenario import World, load_scenario
from simulators.versions import baseline

SCENARIO = Path(__file__).resolve().parents[2] / "simulators" / "scenarios" / "weekend-promo.yaml"


def _timed(
    world: World, events: list[Event], engine: str, *, memo: bool, sourcing: str
) -> tuple[float, RunResult]:
    scenario = world.scenario
    policies = baseline(scenario.rulesets, SCENARIO.parent).policy_set(engine, memo=memo)
    start = time.process_time()
    result = run_once(world, events, policies, sourcing=sourcing)
    return time.process_time() - start, result


def measure() -> dict[str, Any]:
    world = load_scenario(SCENARIO).build()
    start = time.process_time()
    events = generate_events(world)
    generation = time.process_time() - start
    rows: list[dict[str, Any]] = []

    def row(label: str, hours: int, engine: str, memo: bool, sourcing: str) -> dict[str, Any]:
        stream = (
            events if hours >= world.scenario.duration_hours else [e for e in events if e.at < hours * 3600]
        )
        seconds, result = _timed(world, stream, engine, memo=memo, sourcing=sourcing)
        entry = {
            "run": label,
            "hours": hours,
            "engine": engine,
            "memo": memo,
            "sourcing": sourcing,
            "order_decisions": result.order_decisions,
            "cpu_seconds": round(seconds, 2),
            "decisions_per_second": round(result.order_decisions / seconds),
            "conservation": result.conservation["holds"],
        }
        rows.append(entry)
        return entry

    full_python = row("full replay", 72, "python", True, "fast")
    full_durable = row("full replay", 72, "durable", True, "fast")
    row("every decision evaluated", 72, "python", False, "fast")
    row("every decision evaluated", 72, "durable", False, "fast")
    fast = row("array allocator", 12, "python", True, "fast")
    domain = row("production allocator per order", 12, "python", True, "domain")
    return {
        "events": len(events),
        "generation_cpu_seconds": round(generation, 2),
        "rows": rows,
        "python_over_durable": round(
            full_python["decisions_per_second"] / full_durable["decisions_per_second"], 2
        ),
        "fast_over_domain_sourcing": round(fast["decisions_per_second"] / domain["decisions_per_second"], 1),
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"weekend-promo: {report['events']:,} events generated in {report['generation_cpu_seconds']} s CPU",
        f"{'run':<32} {'h':>3} {'engine':<8} {'memo':<5} {'sourcing':<8} {'orders':>8} {'cpu s':>7} {'per s':>8}",
    ]
    for r in report["rows"]:
        lines.append(
            f"{r['run']:<32} {r['hours']:>3} {r['engine']:<8} {'on' if r['memo'] else 'off':<5} "
            f"{r['sourcing']:<8} {r['order_decisions']:>8} {r['cpu_seconds']:>7} {r['decisions_per_second']:>8}"
        )
    lines.append(f"ratio python/durable (full replay): {report['python_over_durable']}")
    lines.append(f"ratio array/production allocator (12 h): {report['fast_over_domain_sourcing']}")
    return "\n".join(lines)


@pytest.mark.benchmark
def test_simulator_order_decisions_per_second() -> None:
    report = measure()
    print("\n" + render(report))
    assert all(r["conservation"] for r in report["rows"])


if __name__ == "__main__":
    print(render(measure()))
