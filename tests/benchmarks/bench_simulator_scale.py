"""A simulation at a real retailer's size: 120 stores, 2 DCs and 5,000 SKUs (610,000 sku-locations), four
channels (store tills, e-commerce, click-and-collect, a marketplace fed every 6 hours), a weekend promotion
on 1,000 SKUs, the shipped rulesets and the Python engine, one core.

The network and its demand are generated here from a seed (nothing large is shipped): the demand rates are
scaled so that the 72 hours hold about the asked number of events (orders, till sales, returns). Each size
runs in a child process of its own, which reports its CPU times and its peak resident memory
(`ru_maxrss`): the world's setup (the scenario expanded to 610,000 sku-locations), the event generation,
the run's setup (the stock store, the allocator, the promotion calendar) and the replay, separately.

Sizes: `SIM_SCALE_EVENTS` (comma-separated event counts, default `25000,250000`; the 10x larger
`2500000` takes about ten times as long). Run: `make bench`, or
`PYTHONPATH=. python tests/benchmarks/bench_simulator_scale.py` for the table alone.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOURS = 72
STORES_PER_REGION = 30
SKU_GROUPS = 10  # of 500 SKUs each
# till sales and orders of each channel, as shares of the events
SHARES = {"store_pos": 0.5, "ecommerce": 0.33, "click_and_collect": 0.1, "marketplace": 0.05}
RETURN_RATE = 0.02
# the mean demand multiplier over the 72 hours: the promotion lifts a fifth of the SKUs' demand on two days
MEAN_UPLIFT = 1.25
DAY = [0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 0.8, 1.0, 1.1, 1.2, 1.3, 1.3, 1.2, 1.1, 1.1, 1.2, 1.4,
       1.6, 1.8, 1.7, 1.4, 0.9, 0.5]  # fmt: skip


def scenario_document(events: int) -> dict[str, Any]:
    """The generated scenario, with demand rates for about `events` events over 72 hours."""
    mean = sum(DAY) / len(DAY)
    hour_of_day = [round(h / mean, 4) for h in DAY]
    per_hour = events / (HOURS * MEAN_UPLIFT * (1 + RETURN_RATE))
    stores = STORES_PER_REGION * 4
    regions = [("north", 53.3, 9.8), ("south", 48.5, 10.9), ("east", 52.1, 13.2), ("west", 50.9, 7.2)]
    categories = [
        "audio",
        "video",
        "toys",
        "home",
        "apparel",
        "garden",
        "kitchen",
        "sport",
        "books",
        "beauty",
    ]
    skus = [
        {
            "id": f"{category.upper()}",
            "count": 5000 // SKU_GROUPS,
            "category": category,
            "price": 10.0 + 15 * g,
            "cost": 5.0 + 7 * g,
            "case_pack": (4, 6, 12, 24)[g % 4],
            "lead_time_days": 2 + g % 7,
            "popularity": round(1.0 / (1 + g), 3),
            "stock": {"store": 2 + g % 5, "dc": 150 + 40 * (g % 4)},
        }
        for g, category in enumerate(categories)
    ]
    return {
        "name": "scale",
        "description": "120 stores, 2 DCs, 5,000 SKUs; a weekend promotion on audio and video",
        "seed": 11,
        "start": "2026-11-20T00:00:00Z",
        "duration_hours": HOURS,
        "network": {
            "locations": [
                {"id": "DC-NORTH", "type": "dc", "region": "north", "lat": 53.55, "lon": 10.0},
                {"id": "DC-SOUTH", "type": "dc", "region": "south", "lat": 48.14, "lon": 11.58},
            ],
            "store_groups": [
                {
                    "prefix": f"ST-{name[0].upper()}",
                    "count": STORES_PER_REGION,
                    "region": name,
                    "lat": lat,
                    "lon": lon,
                    "spread_km": 120,
                    "ship_from_store_share": 0.3,
                    "pickup": True,
                    "daily_capacity": 200,
                }
                for name, lat, lon in regions
            ],
        },
        "channels": [
            {"id": "store_pos", "kind": "pos"},
            {
                "id": "ecommerce",
                "kind": "online",
                "fulfillment": {"ship": 0.8, "ship_from_store": 0.2},
                "customer_tiers": {"standard": 0.85, "gold": 0.15},
            },
            {"id": "click_and_collect", "kind": "online", "fulfillment": {"pickup": 1.0}},
            {
                "id": "marketplace",
                "kind": "online",
                "view": {"mode": "batch", "sync_every_hours": 6},
                "fulfillment": {"ship": 1.0},
            },
        ],
        "skus": skus,
        "demand": [
            {
                "channel": "store_pos",
                "rate": round(per_hour * SHARES["store_pos"] / stores, 4),
                "hour_of_day": hour_of_day,
                "units": {1: 0.85, 2: 0.15},
            },
            {
                "channel": "ecommerce",
                "rate": round(per_hour * SHARES["ecommerce"], 3),
                "hour_of_day": hour_of_day,
                "lines": {1: 0.7, 2: 0.22, 3: 0.08},
            },
            {
                "channel": "click_and_collect",
                "rate": round(per_hour * SHARES["click_and_collect"], 3),
                "hour_of_day": hour_of_day,
                "lines": {1: 0.8, 2: 0.2},
            },
            {"channel": "marketplace", "rate": round(per_hour * SHARES["marketplace"], 3)},
        ],
        "promotions": [
            {
                "id": "weekend",
                "start": "2026-11-21T00:00:00Z",
                "end": "2026-11-23T00:00:00Z",
                "categories": ["audio", "video"],
                "uplift": 2.5,
                "curve": [[0, 0.6], [10, 1.0], [30, 0.8], [48, 0.5]],
            },
        ],
        "returns": {
            "rate": RETURN_RATE,
            "lag_hours": [12, 60],
            "restock_share": 0.8,
            "disposition_after_hours": 12,
        },
        "replenishment": {"review_every_hours": 12, "store_lead_time_hours": 18, "demand_window_hours": 24},
        "transfers": {"check_every_hours": 6, "below_units": 0, "qty": 2, "transit_hours": 8},
        "markdowns": {"at_hours": [48], "depth": 0.25, "min_weeks_of_supply": 6, "season_days_to_end": 45},
    }


def child(events: int) -> dict[str, Any]:
    """One size, measured in this process (run as `--child N`)."""
    import yaml

    from simulators.generator import generate_events
    from simulators.runner import Run
    from simulators.scenario import parse_scenario
    from simulators.versions import baseline

    clock = time.process_time
    start = clock()
    world = parse_scenario(yaml.safe_dump(scenario_document(events))).build()
    world_s = clock() - start
    start = clock()
    stream = generate_events(world)
    generate_s = clock() - start
    policies = baseline(world.scenario.rulesets, ROOT / "simulators" / "scenarios").policy_set("python")
    start = clock()
    run = Run(world, policies)
    setup_s = clock() - start
    start = clock()
    result = run.run(stream)
    replay_s = clock() - start
    reorder = result.counts.decisions.get("reorder", 0)
    return {
        "events": len(stream),
        "sku_locations": len(world.skus) * len(world.locations),
        "world_s": round(world_s, 1),
        "generate_s": round(generate_s, 1),
        "setup_s": round(setup_s, 1),
        "replay_s": round(replay_s, 1),
        "events_per_s": round(len(stream) / replay_s),
        "order_decisions": result.order_decisions,
        "reorder_reviews": reorder,
        "reorder_evaluated": result.evaluations.get("reorder", {}).get("evaluations", 0)
        + result.evaluations.get("reorder", {}).get("memo_hits", 0),
        "fill_rate": round(
            sum(c.units_allocated for c in result.channels.values())
            / max(1, sum(c.units_demanded for c in result.channels.values())),
            4,
        ),
        "conservation": bool(result.conservation["holds"]),
        # kilobytes on Linux
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def sizes() -> list[int]:
    raw = os.environ.get("SIM_SCALE_EVENTS", "25000,250000")
    return [int(part) for part in raw.split(",") if part.strip()]


def measure() -> list[dict[str, Any]]:
    rows = []
    for events in sizes():
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(events)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'events':>9} {'sku-loc':>8} {'world s':>7} {'gen s':>6} {'setup s':>7} {'replay s':>8} "
        f"{'events/s':>8} {'reviewed':>9} {'of':>10} {'fill':>6} {'peak MB':>7}"
    ]
    for r in rows:
        lines.append(
            f"{r['events']:>9} {r['sku_locations']:>8} {r['world_s']:>7} {r['generate_s']:>6} {r['setup_s']:>7} "
            f"{r['replay_s']:>8} {r['events_per_s']:>8} {r['reorder_evaluated']:>9} {r['reorder_reviews']:>10} "
            f"{r['fill_rate']:>6} {r['peak_rss_mb']:>7}"
        )
    return "\n".join(lines)


@pytest.mark.benchmark
def test_a_real_size_network_replays_in_minutes() -> None:
    rows = measure()
    print("\n" + render(rows))
    # figures are reported, not asserted (the machine is shared); every run must conserve stock
    assert all(row["conservation"] for row in rows)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(int(sys.argv[2]))))
    else:
        print(render(measure()))
