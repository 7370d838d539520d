"""The HTML report: calendar axes, gaps, honest axes, identical runs told apart, breakdowns, equations."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from simulators.charts import TimeAxis, Window, line_chart, value_ticks
from simulators.events import Event
from simulators.report import render_report
from simulators.scenario import World
from simulators.simulation import Options, simulate
from simulators.versions import VersionSet, resolve

RULESETS = Path(__file__).parent / "rulesets"
DC_ONLY = str(RULESETS / "dc-only.yaml")


@pytest.fixture(scope="module")
def twins(small_world: World, small_events: list[Event]) -> dict[str, Any]:
    """The same version twice (identical runs) and another one, on the live view only."""
    specs = [DC_ONLY, DC_ONLY, f"nearest-anywhere@{RULESETS / 'nearest-anywhere.yaml'}"]
    return simulate(
        small_world, small_events, resolve(specs, VersionSet("defaults", {})), Options(views=("realtime",))
    )


def _texts(svg: str) -> list[str]:
    return re.findall(r'class="tick">([^<]*)</text>', svg)


def test_the_time_axis_is_the_calendar_with_the_promotion_shaded(twins: dict[str, Any]) -> None:
    html = render_report(twins)
    assert "0h" not in re.sub(r"<style>.*?</style>", "", html, flags=re.S).replace("(48 hours)", "")
    assert "Fri 20 Nov" in html and "Sat 21 Nov" in html and "12:00" in html
    assert html.count('class="window"') >= 4  # the promotion on every hourly chart
    assert "promotion toy-saturday" in html
    assert "Sat 21 Nov 2026 00:00 to Sun 22 Nov 2026 00:00 UTC" in html  # the promotion's window
    assert twins["scenario"]["description"] in html


def test_hours_without_demand_are_gaps_not_full_fill() -> None:
    axis = TimeAxis(datetime(2026, 11, 20, tzinfo=UTC), 6)
    svg = line_chart("fill", [("run", [0.5, None, None, 1.0, 0.8, None])], axis, percent=True)
    lines = re.findall(r'<polyline[^>]*points="([^"]*)"', svg)
    # hour 0 alone (a marker, no line), then hours 3-4 as one segment: nothing is drawn for hours 1, 2, 5
    assert [len(points.split()) for points in lines] == [2]
    assert svg.count("<circle") >= 2


@pytest.mark.parametrize(
    ("highest", "ticks"),
    [
        (0, [0, 1]),
        (1, [0, 1]),
        (2, [0, 1, 2]),
        (3, [0, 1, 2, 3]),
        (7, [0, 2, 4, 6, 8]),
        (13, [0, 5, 10, 15]),
        (96, [0, 25, 50, 75, 100]),
        (1234, [0, 500, 1000, 1500]),
    ],
)
def test_unit_axes_are_whole_numbers_without_repeated_labels(highest: int, ticks: list[int]) -> None:
    top, values = value_ticks(highest, integer=True, percent=False)
    assert values == ticks and top == ticks[-1]
    axis = TimeAxis(datetime(2026, 11, 20, tzinfo=UTC), 4)
    labels = _texts(line_chart("units", [("run", [0, highest, 0, 0])], axis, integer=True))
    value_labels = [label for label in labels if ":" not in label and "Nov" not in label]
    assert value_labels == [f"{t:,}" for t in ticks]


def test_identical_runs_are_said_to_be_identical_and_drawn_apart(twins: dict[str, Any]) -> None:
    html = render_report(twins)
    first, second, other = (f"{r['label']} / {r['view']}" for r in twins["runs"])
    assert f"Identical runs (every KPI and hour): {first} and {second}" in html
    assert "Their lines lie on top of each other" in html
    chart = html[html.index("<h3>Lost sales (units)</h3>") :]
    chart = chart[: chart.index("</figure>")]
    dashes = re.findall(
        r'<polyline fill="none" stroke="([^"]+)" stroke-width="1.8"( stroke-dasharray="[^"]+")?', chart
    )
    assert len(set(dashes)) == len(dashes)  # colour and dash pattern differ per run
    assert other not in chart.split("Identical on this chart")[-1]


def test_the_kpi_table_highlights_differences_from_the_first_run(twins: dict[str, Any]) -> None:
    html = render_report(twins)
    service = html[html.index("<h2>Service</h2>") : html.index("<h2>Hour by hour</h2>")]
    rows = re.findall(r"<tr( class=\"differs\")?><th>([^<]+)</th>(.*?)</tr>", service)
    by_label = {label: (bool(differs), cells) for differs, label, cells in rows}
    differs, cells = by_label["split shipments (orders)"]
    assert differs and cells.count('class="diff"') == 1  # the twin equals the first, the other differs
    differs, cells = by_label["units demanded"]
    assert not differs and 'class="diff"' not in cells


def test_top_skus_locations_and_regions_by_lost_and_oversold_units(twins: dict[str, Any]) -> None:
    run = twins["runs"][0]
    assert sum(v["lost_units"] for v in run["by_sku"].values()) == run["kpis"]["lost_units"]
    assert sum(v["lost_units"] for v in run["by_region"].values()) == run["kpis"]["lost_units"]
    till = run["channels"]["store_pos"]["lost_units"]
    assert till <= sum(v["lost_units"] for v in run["by_location"].values()) <= run["kpis"]["lost_units"]
    html = render_report(twins)
    worst_sku = max(run["by_sku"], key=lambda s: run["by_sku"][s]["lost_units"])
    worst = run["by_sku"][worst_sku]
    section = html[html.index("<h3>Top SKUs</h3>") : html.index("<h3>Top locations</h3>")]
    assert f"<th>{worst_sku}</th><td>{worst['lost_units']:,} / {worst['oversold_units']:,}</td>" in section
    assert "<h3>Top locations</h3>" in html and "<h3>Regions</h3>" in html


def test_the_conservation_check_is_an_equation_with_numbers(twins: dict[str, Any]) -> None:
    html = render_report(twins)
    c = twins["runs"][0]["conservation"]
    total = c["start"] + c["receipts"] + c["returns_restocked"]
    assert f'stock at the start <span class="num">{c["start"]:,}</span> + received' in html
    assert f'= sold <span class="num">{c["sold"]:,}</span> + on hand at the end' in html
    assert (
        f'<span class="num">{total:,}</span> = <span class="num">{total:,}</span>: <span class="ok">holds'
        in html
    )


def test_replenishment_transfers_and_approvals_are_shown(twins: dict[str, Any]) -> None:
    html = render_report(twins)
    section = html[html.index("<h2>Replenishment, transfers and approvals</h2>") :]
    for label in (
        "reorders released",
        "units on purchase orders at the end",
        "transfers executed",
        "approval cycle",
    ):
        assert label in section


def test_the_report_takes_what_the_document_has(twins: dict[str, Any]) -> None:
    document = copy.deepcopy(twins)
    for run in document["runs"]:
        for key in ("by_sku", "by_location", "by_region", "events_skipped"):
            run.pop(key)
        for key in ("reorders_released", "on_order_units", "transfers_executed"):
            run["kpis"].pop(key)
        run["kpis"]["reorder_units_rerouted"] = 12  # a count the report does not know
        run["conservation"]["on_order"] = 5
    document["scenario"].pop("promotions")
    document["scenario"].pop("description")
    html = render_report(document)
    assert "reorder units rerouted" in html[html.index("<h3>Replenishment</h3>") :]
    assert "also counted: on order 5" in html
    assert "No SKUs lost or oversold a unit." in html
    assert "None skipped" in html


def test_skipped_events_by_type_and_reason(twins: dict[str, Any]) -> None:
    document = copy.deepcopy(twins)
    for run in document["runs"]:
        run["events_skipped"] = {"sales": {"unknown SKU": 3, "outside the horizon": 0}, "orders": {}}
    html = render_report(document)
    section = html[html.index("<h2>Skipped events</h2>") : html.index("<h2>Rulesets</h2>")]
    assert "<th>every run</th>" in section  # every run skipped the same
    assert "<th>sales</th><td class='reason'>unknown SKU</td><td>3</td>" in section
    document["runs"][0]["events_skipped"] = {"sales": {"unknown_sku": 1}}
    section = render_report(document).split("<h2>Skipped events</h2>")[1]
    assert "<th>sales</th><td class='reason'>unknown sku</td><td>1</td><td>0</td>" in section
    assert "outside the horizon" not in section
    for run in document["runs"]:
        run["events_skipped"] = {"sales": {}, "orders": {"bad channel": 0}}
    assert "None skipped" in render_report(document)


def test_windows_outside_the_run_are_clipped() -> None:
    axis = TimeAxis(datetime(2026, 11, 20, 6, 30, tzinfo=UTC), 30, [Window(-5, 100, "promotion p")])
    svg = line_chart("x", [("run", [1] * 30)], axis, integer=True)
    x, width = (float(v) for v in re.search(r'<rect x="([\d.]+)" y="\d+" width="([\d.]+)"', svg).groups())  # type: ignore[union-attr]
    assert x >= 58 and x + width <= 720 - 14 + 0.1
    assert "07:00" in svg or "12:00" in svg  # ticks on whole hours although the run starts at 06:30


def test_the_breakdowns_add_up_to_the_run_totals(small_world: World, small_events: list[Event]) -> None:
    document = simulate(small_world, small_events, resolve([DC_ONLY], VersionSet("defaults", {})), Options())
    assert [run["view"] for run in document["runs"]] == ["fragmented", "realtime"]
    assert document["runs"][0]["kpis"]["oversold_units"] > 0  # the stale view oversells
    for run in document["runs"]:
        for field in ("by_sku", "by_region"):
            for kpi in ("lost_units", "oversold_units"):
                assert sum(v[kpi] for v in run[field].values()) == run["kpis"][kpi], (field, kpi)
        assert set(run["by_sku"]) <= {sku.id for sku in small_world.skus}
        assert set(run["by_location"]) <= {loc.id for loc in small_world.locations}
        located = sum(v["lost_units"] + v["oversold_units"] for v in run["by_location"].values())
        assert located <= run["kpis"]["lost_units"] + run["kpis"]["oversold_units"]
        assert all(v["lost_units"] + v["oversold_units"] > 0 for v in run["by_sku"].values())
