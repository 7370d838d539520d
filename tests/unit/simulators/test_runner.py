"""Simulation runs: stock is conserved, a stale view oversells, versions compare on one stream, output is
byte-identical."""

from __future__ import annotations

import gc
import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from service.domain.allocation import (
    UNLIMITED,
    AllocationPolicy,
    Destination,
    Fulfillment,
    IndexedPicks,
    Location,
    OrderLine,
    allocate,
)
from simulators.events import Event, Order, read_events, write_events
from simulators.kpis import encode, run_kpis
from simulators.progress import ProgressBar
from simulators.report import render_report
from simulators.runner import Run
from simulators.scenario import World
from simulators.simulation import Options, simulate
from simulators.versions import VersionSet, resolve

RULESETS = Path(__file__).parent / "rulesets"
DEFAULTS = VersionSet("defaults", {})


def _run(world: World, events: list[Event], specs: list[str] | None = None, **options: Any) -> dict[str, Any]:
    return simulate(world, events, resolve(specs or [], DEFAULTS), Options(**options))


@pytest.fixture(scope="module")
def compared(small_world: World, small_events: list[Event]) -> dict[str, Any]:
    specs = [str(RULESETS / "dc-only.yaml"), f"nearest-anywhere@{RULESETS / 'nearest-anywhere.yaml'}"]
    return _run(small_world, small_events, specs)


def test_every_run_conserves_stock(compared: dict[str, Any]) -> None:
    assert len(compared["runs"]) == 4
    for run in compared["runs"]:
        c = run["conservation"]
        assert c["holds"]
        assert (
            c["start"] + c["receipts"] + c["returns_restocked"]
            == c["end"] + c["sold"] + c["damaged"] + c["in_transit"]
        )


def test_each_version_runs_on_the_stale_and_the_live_view(compared: dict[str, Any]) -> None:
    assert [(r["label"], r["view"]) for r in compared["runs"]] == [
        ("dc-only@dc-only", "fragmented"),
        ("dc-only@dc-only", "realtime"),
        ("nearest-anywhere@nearest-anywhere", "fragmented"),
        ("nearest-anywhere@nearest-anywhere", "realtime"),
    ]


def test_the_batch_synced_channel_oversells_and_the_live_one_does_not(compared: dict[str, Any]) -> None:
    stale, live = compared["runs"][0], compared["runs"][1]
    assert stale["channels"]["marketplace"]["oversold_units"] > 0
    assert live["channels"]["marketplace"]["oversold_units"] == 0
    assert all(c["oversold_units"] == 0 for name, c in stale["channels"].items() if name != "marketplace")


def test_every_run_sees_the_same_demand(compared: dict[str, Any]) -> None:
    demanded = {run["kpis"]["units_demanded"] for run in compared["runs"]}
    assert len(demanded) == 1


def test_versions_decide_differently_on_the_same_stream(compared: dict[str, Any]) -> None:
    dc_only, anywhere = compared["runs"][1]["kpis"], compared["runs"][3]["kpis"]
    assert dc_only["split_shipments"] == 0
    assert anywhere["split_shipments"] > 0
    assert dc_only["mean_distance_km"] != anywhere["mean_distance_km"]


def test_the_runs_name_the_ruleset_versions_they_used(compared: dict[str, Any]) -> None:
    ref = compared["runs"][0]["rulesets"]["allocation"]
    assert ref["name"] == "dc-only"
    assert len(ref["sha256"]) == 64


def test_the_same_inputs_give_byte_identical_kpis(
    small_world: World, small_events: list[Event], compared: dict[str, Any]
) -> None:
    specs = [str(RULESETS / "dc-only.yaml"), f"nearest-anywhere@{RULESETS / 'nearest-anywhere.yaml'}"]
    assert encode(_run(small_world, small_events, specs)) == encode(compared)


def test_the_kpi_json_has_sorted_keys_and_no_clock(compared: dict[str, Any]) -> None:
    text = encode(compared).decode()
    assert text.index('"engine"') < text.index('"events"') < text.index('"runs"')
    assert "elapsed" not in text and "generated_at" not in text


def test_an_hourly_series_covers_every_hour(small_world: World, compared: dict[str, Any]) -> None:
    series = compared["runs"][0]["series"]
    assert len(series["fill_rate"]) == small_world.scenario.duration_hours
    assert sum(series["units_demanded"]) == compared["runs"][0]["kpis"]["units_demanded"]


def test_replaying_a_recorded_log_gives_the_same_kpis(
    tmp_path: Path, small_world: World, small_events: list[Event]
) -> None:
    path = tmp_path / "history.jsonl"
    write_events(small_events, path, small_world.start)
    replayed = _run(small_world, read_events(path, small_world.start))
    generated = _run(small_world, small_events)
    assert replayed["runs"] == generated["runs"]


class TracedRun(Run):
    """A run whose every order goes through `allocate(..., explain=True)`, as the service allocates with
    the full trace (on the order's own arrays and with the candidate trace recorded), instead of the run's
    tracking `Allocator`."""

    def _plan(
        self,
        lines: Sequence[tuple[int, int]],
        available: Sequence[Sequence[int]],
        capacity: Sequence[int],
        policy: AllocationPolicy,
        fulfillment: str,
        pickup: int,
        lat: float,
        lon: float,
        thresholds: Sequence[Sequence[int] | None] | None,
    ) -> IndexedPicks:
        net = self.network
        low: dict[str, dict[str, int]] = {}
        for (s, _), row in zip(lines, thresholds or [None] * len(lines), strict=True):
            if row is not None:
                low[self.sku_ids[s]] = dict(zip(net.ids, row, strict=True))
        locations = [
            Location(loc.id, loc.type, loc.region, loc.lat, loc.lon, loc.capabilities,
                     None if capacity[i] >= UNLIMITED else capacity[i], loc.priority)
            for i, loc in enumerate(net.locations)
        ]  # fmt: skip
        plan = allocate(
            [OrderLine(self.sku_ids[s], q) for s, q in lines],
            locations,
            {self.sku_ids[s]: dict(zip(net.ids, available[s], strict=True)) for s, _ in lines},
            policy,
            Fulfillment(fulfillment, net.ids[pickup] if fulfillment == "pickup" else None),
            Destination(lat, lon),
            low_stock_thresholds=low or None,
            explain=True,
        )
        return [[(net.index[p.location], p.qty) for p in line.picks] for line in plan.lines]


@pytest.mark.parametrize("ruleset", [None, "nearest-anywhere.yaml", "dc-only.yaml"])
@pytest.mark.parametrize("view", ["configured", "realtime"])
def test_a_run_on_the_traced_allocator_gives_the_same_kpis(
    small_world: World, small_events: list[Event], ruleset: str | None, view: str
) -> None:
    versions = resolve([str(RULESETS / ruleset)] if ruleset else [], DEFAULTS)[0]
    fast = Run(small_world, versions.policy_set("python"), view=view).run(small_events)
    traced = TracedRun(small_world, versions.policy_set("python"), view=view).run(small_events)
    assert fast.order_decisions > 100
    assert run_kpis(fast) == run_kpis(traced)


def _collecting_during_run(world: World, events: list[Event]) -> set[bool]:
    """Whether the cyclic garbage collector was on at each order of a run."""
    seen: set[bool] = set()
    run = Run(world, DEFAULTS.policy_set("python"), observer=lambda *_: seen.add(gc.isenabled()))
    run.run(events)
    return seen


def test_the_collector_is_paused_for_a_run_on_the_main_thread_only(
    small_world: World, small_events: list[Event]
) -> None:
    assert gc.isenabled()
    assert _collecting_during_run(small_world, small_events) == {False}
    assert gc.isenabled()
    with ThreadPoolExecutor(1) as pool:  # as the service runs a simulation: its collector stays on
        assert pool.submit(_collecting_during_run, small_world, small_events).result() == {True}
    gc.disable()
    try:  # a collector already off stays off
        assert _collecting_during_run(small_world, small_events) == {False}
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_both_rule_engines_give_the_same_kpis(small_world: World, small_events: list[Event]) -> None:
    spec = [f"nearest-anywhere@{RULESETS / 'nearest-anywhere.yaml'}"]
    python = _run(small_world, small_events, spec, engine="python", memo=False)
    durable = _run(small_world, small_events, spec, engine="durable", memo=False)
    assert python["runs"] == durable["runs"]


def test_the_memo_changes_no_decision(small_world: World, small_events: list[Event]) -> None:
    spec = [f"nearest-anywhere@{RULESETS / 'nearest-anywhere.yaml'}"]
    memo = _run(small_world, small_events, spec, memo=True)
    plain = _run(small_world, small_events, spec, memo=False)
    for a, b in zip(memo["runs"], plain["runs"], strict=True):
        assert a["kpis"] == b["kpis"]
        assert a["evaluations"] != b["evaluations"]


def test_returns_of_orders_never_sent_are_skipped(small_world: World, small_events: list[Event]) -> None:
    # Without any order the returns that refer to orders have nothing to come back from.
    no_orders = [e for e in small_events if not isinstance(e, Order)]
    run = _run(small_world, no_orders)["runs"][0]
    order_returns = sum(1 for e in small_events if getattr(e, "order_id", None))
    assert run["events_skipped"]["return"] == {"unknown_order": order_returns}


def test_the_report_is_one_offline_page_with_charts(compared: dict[str, Any]) -> None:
    html = render_report(compared)
    assert html.count("<svg") >= 5
    assert "<script" not in html and "src=" not in html and "href=" not in html
    for run in compared["runs"]:
        assert run["label"] in html


def test_the_progress_bar_is_silent_unless_asked() -> None:
    quiet, loud = io.StringIO(), io.StringIO()
    ProgressBar("run", stream=quiet)(5, 10)
    ProgressBar("run", stream=loud, enabled=True)(10, 10)
    assert quiet.getvalue() == ""
    assert "100%" in loud.getvalue()


def _no_dc_stock(review_every_hours: int) -> World:
    """The small scenario with an empty DC whose purchase orders take longer than the run to arrive."""
    import yaml

    from simulators.scenario import parse_scenario

    from .conftest import SCENARIOS

    raw = yaml.safe_load((SCENARIOS / "small.yaml").read_text())
    for sku in raw["skus"]:
        sku["lead_time_days"] = 10
        sku["stock"] = {**sku.get("stock", {}), "dc": 0}
    raw["inbound"] = []
    raw["replenishment"]["review_every_hours"] = review_every_hours
    return parse_scenario(yaml.safe_dump(raw)).build()


def test_a_purchase_order_on_its_way_counts_in_the_next_reviews_position() -> None:
    from simulators.generator import generate_events
    from simulators.runner import Run
    from simulators.versions import baseline

    world = _no_dc_stock(12)  # reviews at 12, 24, 36 and 48 h
    policies = baseline(
        world.scenario.rulesets, Path(__file__).resolve().parents[3] / "simulators" / "scenarios"
    )
    decided: list[tuple[str, str, dict[str, Any], Any]] = []
    run = Run(
        world,
        policies.policy_set("python"),
        decided=lambda kind, gathered, decision: (
            decided.append((gathered["sku"], gathered["location"], gathered["facts"], decision))
            if kind == "reorder"
            else None
        ),
    )
    result = run.run(generate_events(world))
    # nothing arrives before the end: every DC review sees all the units it ordered before as inbound
    ordered: dict[str, int] = {}
    dc_reviews = 0
    for sku, location, facts, decision in decided:
        if location != "DC-1":
            continue
        dc_reviews += 1
        assert facts["position"]["in_transit"] == ordered.get(sku, 0)
        if not decision.review:
            ordered[sku] = ordered.get(sku, 0) + decision.qty
    assert dc_reviews > 0
    assert result.on_order_units == sum(ordered.values()) > 0
