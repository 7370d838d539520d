"""Microseconds per ruleset evaluation: 5, 50 and 500 rules, both engines, both hit policies, trace none
and rules. Reports medians and the trace-rules / trace-none ratio measured side by side in the same pass.

Run: `make bench`, or `python tests/benchmarks/bench_rules.py` for the table alone.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

import pytest

from service.rules.language import Evaluator, compile_ruleset, parse_ruleset

TYPES = ["store", "dc", "dark_store", "outlet", "popup"]
REGIONS = [f"r{i}" for i in range(10)]
CALLS = 4000
PASSES = 5

FACTS: dict[str, Any] = {
    "transfer": {"qty": 7, "value": 480.0, "reason": "rebalance"},
    "source": {"available": 40, "available_after": 33, "floor": 4, "open_promotions": 1, "type": "outlet"},
    "destination": {"region": "r9", "type": "store"},
    "requested_by": {"role": "store_manager"},
}


def ruleset_text(count: int, policy: str) -> str:
    """`count` rules keyed by source type and destination region, with quantity bands: the shape of
    a real transfer policy (a few shared leading tests, then narrower ones)."""
    lines = [
        f"ruleset: bench-{count}-{policy}",
        "kind: transfer",
        f"hit_policy: {policy}",
        "facts: {transfer.qty: int, transfer.value: float, source.type: str, source.open_promotions: int,",
        "        source.available_after: int, source.floor: int, destination.region: str}",
        "rules:",
    ]
    for i in range(count):
        band = (i // 50) * 3
        lines.append(
            f"  - id: rule-{i}\n    priority: {i % 97}\n    when:\n      all:\n"
            f'        - source.type == "{TYPES[i % 5]}"\n'
            f'        - destination.region == "{REGIONS[(i // 5) % 10]}"\n'
            f"        - transfer.qty > {band}\n"
            f"        - source.available_after >= source.floor + {i % 3}\n"
            f"    then: {{outcome: route, sla_hours: {1 + i % 48}, reason: rule {i}}}"
        )
    lines.append("default: {outcome: approve}")
    return "\n".join(lines) + "\n"


def medians_us(evaluator: Evaluator, calls: int = CALLS) -> tuple[float, float]:
    """Median µs per call with trace none and with trace rules, measured in alternating batches so that
    both see the same machine load."""
    evaluate = evaluator.evaluate
    for _ in range(300):
        evaluate(FACTS, "rules")
    samples: dict[str, list[int]] = {"none": [], "rules": []}
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for _ in range(calls // 200):
            for trace in ("none", "rules"):
                bucket = samples[trace]
                for _ in range(200):
                    start = clock()
                    evaluate(FACTS, trace)  # type: ignore[arg-type]
                    bucket.append(clock() - start)
    finally:
        gc.enable()
    return statistics.median(samples["none"]) / 1000.0, statistics.median(samples["rules"]) / 1000.0


def measure(passes: int = PASSES) -> list[dict[str, Any]]:
    """Every cell measured `passes` times; each cell reports its least disturbed pass (lowest trace-rules
    median), with the ratio from that same pass. On a shared machine other tenants only ever add time."""
    evaluators = []
    for count in (5, 50, 500):
        for policy in ("first", "collect"):
            ruleset = parse_ruleset(ruleset_text(count, policy))
            for engine in ("durable", "python"):
                evaluators.append((count, policy, engine, compile_ruleset(ruleset, engine)))  # type: ignore[arg-type]
    best: dict[tuple[int, str, str], dict[str, Any]] = {}
    for _ in range(passes):
        for count, policy, engine, evaluator in evaluators:
            none, rules = medians_us(evaluator)
            row = {
                "rules": count,
                "policy": policy,
                "engine": engine,
                "matched": len(evaluator.evaluate(FACTS).matched),
                "none_us": none,
                "rules_us": rules,
                "ratio": rules / none,
            }
            key = (count, policy, engine)
            if key not in best or rules < best[key]["rules_us"]:
                best[key] = row
    return list(best.values())


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| rules | hit policy | engine | matched | trace none (µs) | trace rules (µs) | rules / none |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        out.append(
            f"| {r['rules']} | {r['policy']} | {r['engine']} | {r['matched']} | {r['none_us']:.1f} | "
            f"{r['rules_us']:.1f} | {r['ratio']:.2f} |"
        )
    return "\n".join(out)


@pytest.mark.benchmark
def test_rules_evaluation_speed() -> None:
    rows = measure()
    print()
    print(table(rows))
    goal = next(r for r in rows if r["rules"] == 50 and r["engine"] == "durable" and r["policy"] == "first")
    print(
        f"\n50 rules, durable, first hit: trace rules {goal['rules_us']:.1f} µs median "
        f"(goal < 20), trace rules / none {goal['ratio']:.2f} (goal <= 1.5)"
    )


if __name__ == "__main__":
    import durable_rules_engine

    print(f"durable_rules_engine: {durable_rules_engine.__file__}")
    print(table(measure()))
