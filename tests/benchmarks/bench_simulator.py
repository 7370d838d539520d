"""Order decisions per second in a simulation run of the weekend-promo scenario (120 stores, 2 DCs,
2 dark stores, 50 SKUs, four channels), with the shipped rulesets, one core.

Measured in one process, CPU time of the run only (the event stream is generated once, beforehand): the
full 72-hour replay with each engine, the ruleset memo on (the default), and with the memo off (every
decision evaluates its ruleset). Orders are allocated by `service.domain.allocation.Allocator` (which
`allocate` runs too) against the run's own `MemoryStockStore`.

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


def _timed(world: World, events: list[Event], engine: str, *, memo: bool) -> tuple[float, RunResult]:
    scenario = world.scenario
    policies = baseline(scenario.rulesets, SCENARIO.parent).policy_set(engine, memo=memo)
    start = time.process_time()
    result = run_once(world, events, policies)
    return time.process_time() - start, result


def measure() -> dict[str, Any]:
    world = load_scenario(SCENARIO).build()
    start = time.process_time()
    events = generate_events(world)
    generation = time.process_time() - start
    rows: list[dict[str, Any]] = []

    def row(label: str, engine: str, memo: bool) -> dict[str, Any]:
        seconds, result = _timed(world, events, engine, memo=memo)
        entry = {
            "run": label,
            "hours": world.scenario.duration_hours,
            "engine": engine,
            "memo": memo,
            "order_decisions": result.order_decisions,
            "cpu_seconds": round(seconds, 2),
            "decisions_per_second": round(result.order_decisions / seconds),
            "conservation": result.conservation["holds"],
        }
        rows.append(entry)
        return entry

    full_python = row("full replay", "python", True)
    full_durable = row("full replay", "durable", True)
    row("every decision evaluated", "python", False)
    row("every decision evaluated", "durable", False)
    return {
        "events": len(events),
        "generation_cpu_seconds": round(generation, 2),
        "rows": rows,
        "python_over_durable": round(
            full_python["decisions_per_second"] / full_durable["decisions_per_second"], 2
        ),
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        f"weekend-promo: {report['events']:,} events generated in {report['generation_cpu_seconds']} s CPU",
        f"{'run':<32} {'h':>3} {'engine':<8} {'memo':<5} {'orders':>8} {'cpu s':>7} {'per s':>8}",
    ]
    for r in report["rows"]:
        lines.append(
            f"{r['run']:<32} {r['hours']:>3} {r['engine']:<8} {'on' if r['memo'] else 'off':<5} "
            f"{r['order_decisions']:>8} {r['cpu_seconds']:>7} {r['decisions_per_second']:>8}"
        )
    lines.append(f"ratio python/durable (full replay): {report['python_over_durable']}")
    return "\n".join(lines)


@pytest.mark.benchmark
def test_simulator_order_decisions_per_second() -> None:
    report = measure()
    print("\n" + render(report))
    assert all(r["conservation"] for r in report["rows"])


if __name__ == "__main__":
    print(render(measure()))
