"""Stock conservation holds whatever the scenario: a property over seeds, return behaviour, sync periods,
stock levels and allocation policies."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators.generator import generate_events
from simulators.scenario import parse_scenario
from simulators.simulation import Options, simulate
from simulators.versions import VersionSet, resolve

SMALL = Path(__file__).resolve().parents[3] / "simulators" / "scenarios" / "small.yaml"
RULESETS = Path(__file__).parent / "rulesets"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    return_rate=st.floats(0.0, 0.5),
    restock_share=st.floats(0.0, 1.0),
    sync_every=st.sampled_from([1.0, 3.0, 6.0, 24.0]),
    store_stock=st.integers(0, 12),
    variant=st.sampled_from([None, "dc-only.yaml", "nearest-anywhere.yaml"]),
)
def test_stock_is_conserved_in_every_run(
    seed: int,
    return_rate: float,
    restock_share: float,
    sync_every: float,
    store_stock: int,
    variant: str | None,
) -> None:
    document = yaml.safe_load(SMALL.read_text())
    document["seed"] = seed
    document["duration_hours"] = 24
    document["returns"] = {"rate": return_rate, "lag_hours": [0, 12], "restock_share": restock_share,
                           "disposition_after_hours": 2}  # fmt: skip
    document["channels"][2]["view"]["sync_every_hours"] = sync_every
    for sku in document["skus"]:
        sku["stock"]["store"] = store_stock
    world = parse_scenario(yaml.safe_dump(document)).build()
    specs = [str(RULESETS / variant)] if variant else []
    result = simulate(world, generate_events(world), resolve(specs, VersionSet("defaults", {})), Options())
    for run in result["runs"]:
        c = run["conservation"]
        assert c["holds"], c
        kpis = run["kpis"]
        assert kpis["units_allocated"] + kpis["lost_units"] + kpis["oversold_units"] == kpis["units_demanded"]
        assert kpis["stock_end"] >= 0
