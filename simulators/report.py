"""The HTML report of a simulation: one self-contained page, readable offline, that prints on A4.

`render_report(document)` takes the KPI document of `simulators.kpis` (or of `simulators.multirun`) and
returns the page: the scenario and its promotions, the spread of the KPIs over seeds when there are
several, the runs side by side with their differences highlighted, fill rate, demand, lost and oversold
units hour by hour on the calendar with the promotion windows shaded, the channels, the SKUs, locations
and regions that lost or oversold most, replenishment, transfers and approvals, skipped events, the
rulesets and the conservation check of every run as an equation. No script, no external asset; the charts
are inline SVG (`simulators.charts`) and scale to the page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from simulators.charts import TimeAxis, Window, bar_chart, key_sample, line_chart
from simulators.report_tables import (
    conservation_block,
    fmt,
    kpi_table,
    ruleset_table,
    run_title,
    skipped_table,
    top_table,
)

# the KPIs of the spread-over-seeds tables
SEED_KPIS: tuple[tuple[str, str, str], ...] = (
    ("orders", "orders and till sales", "int"),
    ("fill_rate", "fill rate (units)", "pct"),
    ("order_fill_rate", "orders filled in full", "pct"),
    ("lost_units", "lost sales (units)", "int"),
    ("oversold_units", "oversold units", "int"),
    ("split_shipments", "split shipments", "int"),
    ("mean_distance_km", "mean distance (km)", "float"),
    ("revenue", "revenue", "money"),
    ("reorder_units", "units released", "int"),
    ("reorder_units_moved", "units moved from DCs to stores", "int"),
    ("transfers_executed", "transfers executed", "int"),
    ("stock_end", "stock at the end", "int"),
)


def _time(text: str) -> datetime:
    """An ISO 8601 time of the document as an aware UTC datetime."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _when(moment: datetime) -> str:
    return moment.strftime("%a %d %b %Y %H:%M")


def time_axis(scenario: dict[str, Any]) -> TimeAxis:
    """The run's calendar: hour 0 at the scenario's start, the promotions as shaded windows."""
    start = _time(scenario["start"])
    windows = []
    for promotion in scenario.get("promotions") or []:
        try:
            begin, end = _time(promotion["start"]), _time(promotion["end"])
        except (KeyError, TypeError, ValueError):
            continue
        windows.append(
            Window(
                (begin - start).total_seconds() / 3600,
                (end - start).total_seconds() / 3600,
                f"promotion {promotion.get('id', '')}".strip(),
            )
        )
    return TimeAxis(start, int(scenario["duration_hours"]), windows)


def _promotion_list(scenario: dict[str, Any]) -> str:
    items = []
    for promotion in scenario.get("promotions") or []:
        scope = []
        for key, label in (("skus", "SKUs"), ("categories", "categories"), ("channels", "channels")):
            values = promotion.get(key) or []
            if values:
                scope.append(f"{label} {', '.join(str(v) for v in values)}")
        for key, values in sorted(promotion.items()):
            if key in ("id", "start", "end", "uplift", "skus", "categories", "channels"):
                continue
            if isinstance(values, list) and values:
                scope.append(f"{key.replace('_', ' ')} {', '.join(str(v) for v in values)}")
        when = f"{_when(_time(promotion['start']))} to {_when(_time(promotion['end']))} UTC"
        uplift = promotion.get("uplift")
        items.append(
            f"<li><strong>{escape(str(promotion.get('id', '')))}</strong>: {escape(when)}"
            + (f", demand x {float(uplift):g}" if uplift is not None else "")
            + (f"; {escape('; '.join(scope))}" if scope else "; every SKU and channel")
            + "</li>"
        )
    if not items:
        return "<p>No promotion.</p>"
    return f'<ul class="promotions">{"".join(items)}</ul>'


def _same_groups(names: Sequence[str], values: Sequence[Any]) -> list[list[str]]:
    """Groups (two or more) of names whose values are equal."""
    groups: list[tuple[Any, list[str]]] = []
    for name, value in zip(names, values, strict=True):
        for known, members in groups:
            if known == value:
                members.append(name)
                break
        else:
            groups.append((value, [name]))
    return [members for _, members in groups if len(members) > 1]


def _identical_note(groups: list[list[str]], what: str, total: int = 0) -> str:
    if not groups:
        return ""
    if len(groups) == 1 and len(groups[0]) == total:
        return f'<p class="note">All runs are identical {what}: their lines lie on top of each other.</p>'
    said = "; ".join(" and ".join(escape(n) for n in members) for members in groups)
    return (
        f'<p class="note">Identical {what}: {said}. Their lines lie on top of each other; each keeps its own '
        "dash pattern and markers.</p>"
    )


def _legend(runs: Sequence[dict[str, Any]]) -> str:
    items = "".join(
        f'<span class="key">{key_sample(i)}{escape(run_title(run))}</span>' for i, run in enumerate(runs)
    )
    return f'<p class="legend">{items}</p>'


def _hourly(
    runs: Sequence[dict[str, Any]], key: str, axis: TimeAxis, title: str, **kinds: bool
) -> tuple[str, str]:
    series = [(run_title(r), list(r["series"].get(key) or [])) for r in runs]
    chart = line_chart(title, series, axis, **kinds)
    note = _identical_note(
        _same_groups([n for n, _ in series], [v for _, v in series]), "on this chart", len(series)
    )
    return chart, note


def _fill_series(run: dict[str, Any]) -> list[float | None]:
    """Hourly fill rate, None for an hour without demand (drawn as a gap)."""
    series = run["series"]
    demanded = series.get("units_demanded") or []
    allocated = series.get("units_allocated") or []
    return [a / d if d else None for d, a in zip(demanded, allocated, strict=False)]


def _figure(title: str, legend: str, chart: str, note: str, caption: str = "") -> str:
    text = f'<p class="muted">{caption}</p>' if caption else ""
    return f"<figure><h3>{escape(title)}</h3>{text}{legend}{chart}{note}</figure>"


def _seeds_text(seeds: Sequence[int]) -> str:
    if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)


def _kpi_table(
    columns: Sequence[str], entries: Sequence[dict[str, Any]], cell: Callable[[dict[str, Any], str], str]
) -> str:
    """A table of the seed KPIs (rows) over `entries` (columns headed by `columns`, HTML): `cell(value,
    kind)` draws an entry's value of a KPI, "-" where it has none; a KPI no entry has is left out."""
    rows = []
    for key, label, kind in SEED_KPIS:
        if not any(key in entry["kpis"] for entry in entries):
            continue
        cells = [
            "<td>-</td>" if entry["kpis"].get(key) is None else cell(entry["kpis"][key], kind)
            for entry in entries
        ]
        rows.append(f"<tr><th>{escape(label)}</th>{''.join(cells)}</tr>")
    head = "".join(f"<th>{column}</th>" for column in columns)
    return f'<table class="kpis"><thead><tr><th>KPI</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _spread_cell(s: dict[str, Any], kind: str) -> str:
    sd = f"{s['sd'] * 100:.1f} pts" if kind == "pct" else f"{s['sd']:,.1f}"
    return (
        f"<td>{fmt(s['mean'], 'float' if kind == 'int' else kind)} <span class='delta'>± {sd}</span>"
        f"<br><small>{fmt(s['min'], kind)} to {fmt(s['max'], kind)}</small></td>"
    )


def _verdict_cell(seeds: int) -> Callable[[dict[str, Any], str], str]:
    def cell(v: dict[str, Any], kind: str) -> str:
        css = {"larger than noise": "diff", "within noise": "noise", "same": ""}.get(v["verdict"], "")
        unit = "pts" if kind == "pct" else ""
        scale = 100 if kind == "pct" else 1
        return (
            f'<td class="{css}">{v["difference"] * scale:+,.2f} {unit} '
            f"<small>(spread {v['spread'] * scale:,.2f})</small><br><strong>{escape(v['verdict'])}</strong>"
            f"<br><small>higher on {v['seeds_higher']}, lower on {v['seeds_lower']} of {seeds}</small></td>"
        )

    return cell


def _seed_section(document: dict[str, Any]) -> str:
    """Each KPI's mean, standard deviation and range over the seeds per run, and each version against the
    first with its verdict."""
    aggregate = document.get("aggregate")
    if not aggregate:
        return ""
    seeds = document.get("seeds") or []
    parts = [
        f"<h2>Over {len(seeds)} seeds ({escape(_seeds_text(seeds))})</h2>",
        '<p class="muted">Each KPI as the mean over the seeds ± its standard deviation, and below it the '
        f"lowest and highest seed. Everything after this section shows seed {seeds[0] if seeds else ''} "
        "alone.</p>",
        _kpi_table([escape(run_title(run)) for run in aggregate], aggregate, _spread_cell),
    ]
    comparisons = document.get("comparisons") or []
    if comparisons:
        parts.append(
            "<h3>Is a difference larger than the noise?</h3>"
            '<p class="muted">Each version against the first on the same stock view: the difference of the '
            "means, the seed-to-seed spread (the larger of the two standard deviations), and the verdict: "
            "<em>larger than noise</em> when the difference exceeds the spread, <em>within noise</em> when it "
            "does not (the seeds alone could account for it), <em>same</em> when equal on every seed.</p>"
        )
        columns = [
            f"{escape(c['label'])} against {escape(c['against'])}<br><small>{escape(c['view'])}</small>"
            for c in comparisons
        ]
        parts.append(_kpi_table(columns, comparisons, _verdict_cell(len(seeds))))
    return "".join(parts)


STYLE = """
@page{size:A4;margin:12mm}
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;
color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:18px 0 4px}
table{border-collapse:collapse;margin:8px 0;max-width:100%}
th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right;vertical-align:top;overflow-wrap:anywhere}
th:first-child{text-align:left;min-width:8em;overflow-wrap:normal}thead th{background:#f5f5f5;font-weight:600}td.text,.reason{text-align:left}
.ok{color:#2e7d32}.bad{color:#c62828;font-weight:bold}.muted{color:#666}.note{color:#6a4a00}
td.diff{background:#fff3c4;font-weight:600}td.noise{color:#666}.delta{font-size:11px;color:#7a5a00;white-space:nowrap}
tr.differs th{font-weight:600}small{color:#666}
.grid{stroke:#e4e4e4}.axis{stroke:#999}.tick{font-size:11px;fill:#555}.val{font-size:10px;fill:#333}
.window{fill:#fdecc8;opacity:.75}.wlabel{font-size:10px;fill:#8a6100}
svg.chart{display:block;width:100%;height:auto;max-width:760px}
.legend .key{margin-right:14px;white-space:nowrap;display:inline-block}.sample{vertical-align:-1px;margin-right:5px}
figure{margin:0 0 14px}.equations li{margin-bottom:8px}.num{font-variant-numeric:tabular-nums;font-weight:600}
@media print{body{margin:0;max-width:none;padding:0;font-size:11px}h2{break-after:avoid}
figure,tr,.equations li{break-inside:avoid}th,td{padding:2px 5px}}
"""


def render_report(document: dict[str, Any]) -> str:
    scenario = document["scenario"]
    runs: list[dict[str, Any]] = document["runs"]
    events = document["events"]
    axis = time_axis(scenario)
    end = axis.start + timedelta(hours=axis.hours)
    channels = sorted({name for run in runs for name in run["channels"]})
    legend = _legend(runs)
    titles = [run_title(r) for r in runs]
    same_runs = _identical_note(
        _same_groups(titles, [(r["kpis"], r["series"]) for r in runs]), "runs (every KPI and hour)"
    )
    fill_series = [(run_title(r), _fill_series(r)) for r in runs]
    fill = line_chart("fill rate by hour", fill_series, axis, percent=True)
    fill_note = _identical_note(_same_groups(titles, [v for _, v in fill_series]), "on this chart", len(runs))
    demand, demand_note = _hourly(runs, "units_demanded", axis, "units demanded by hour", integer=True)
    lost, lost_note = _hourly(runs, "lost_units", axis, "lost sales by hour", integer=True)
    oversold, oversold_note = _hourly(runs, "oversold_units", axis, "oversold units by hour", integer=True)
    channel_series = [
        (run_title(r), [r["channels"].get(c, {}).get("fill_rate", 0.0) for c in channels]) for r in runs
    ]
    channel_fill = bar_chart("fill rate by channel", channels, channel_series, percent=True)
    short_series = [
        (
            run_title(r),
            [
                r["channels"].get(c, {}).get("lost_units", 0)
                + r["channels"].get(c, {}).get("oversold_units", 0)
                for c in channels
            ],
        )
        for r in runs
    ]
    channel_short = bar_chart("lost and oversold units by channel", channels, short_series, integer=True)
    views = ", ".join(
        f"{escape(name)}: {escape(view)}" for name, view in sorted(scenario["channels"].items())
    )
    by_type = ", ".join(
        f"{n:,} {escape(t)}" for t, n in sorted((scenario.get("locations_by_type") or {}).items())
    )
    description = scenario.get("description") or ""
    described = f'<p class="description">{escape(description)}</p>' if description else ""
    gaps = "Hours without demand are gaps in the line. " if any(None in v for _, v in fill_series) else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Simulation: {escape(scenario["name"])}</title>
<style>{STYLE}</style></head><body>
<h1>Simulation: {escape(scenario["name"])}</h1>
{described}
<p class="muted">{escape(_when(axis.start))} to {escape(_when(end))} UTC ({axis.hours:,} hours), seed
{scenario["seed"]}. {scenario["locations"]:,} locations ({by_type}), {scenario["skus"]:,} SKUs. Events from
{escape(str(events["source"]))}: {events.get("orders", 0):,} orders, {events.get("sales", 0):,} till sales,
{events.get("returns", 0):,} returns, {events.get("receipts", 0):,} receipts. Rule engine
{escape(document["engine"])}. Stock views: {views}.</p>
<h2>Promotions</h2>{_promotion_list(scenario)}
<h2>Runs</h2>{legend}
<p class="muted">One run per ruleset version set and stock view; every run replays the identical event
stream.</p>{same_runs}
{_seed_section(document)}
<h2>Service</h2>
<p class="muted">Highlighted: a value that differs from the first run's, with the difference.</p>
{kpi_table(runs, "service")}
<h2>Hour by hour</h2>
<p class="muted">Times in UTC; the shaded span is the promotion window.</p>
{_figure("Fill rate", legend, fill, fill_note, gaps + "Units allocated out of units demanded in each hour.")}
{_figure("Units demanded", legend, demand, demand_note)}
{_figure("Lost sales (units)", legend, lost, lost_note)}
{
        _figure(
            "Oversold units",
            legend,
            oversold,
            oversold_note,
            "Units a batch-synced channel accepted from its stale stock view that live stock could not give.",
        )
    }
<h2>Channels</h2>{legend}
{_figure("Fill rate by channel", "", channel_fill, "")}
{_figure("Lost and oversold units by channel", "", channel_short, "")}
<h2>Where units were lost or oversold</h2>
<h3>Top SKUs</h3>{top_table(runs, "by_sku", "SKUs")}
<h3>Top locations</h3>
<p class="muted">Demand placed at a location: till sales at the store, click-and-collect orders at the pickup
store. Home deliveries that went short count in their region below.</p>
{top_table(runs, "by_location", "locations")}
<h3>Regions</h3>{top_table(runs, "by_region", "regions")}
<h2>Replenishment, transfers and approvals</h2>
<h3>Replenishment</h3>{kpi_table(runs, "replenishment")}
<h3>Transfers, approvals and markdowns</h3>{kpi_table(runs, "transfers")}
<h3>Stock at the end</h3>{kpi_table(runs, "stock")}
<h2>Skipped events</h2>{skipped_table(document, runs)}
<h2>Rulesets</h2>{ruleset_table(runs)}
<h2>Conservation check</h2>
<p class="muted">Every unit that entered the network is sold, on hand, damaged or on its way between two
locations (units on a purchase order enter when received).</p>
{conservation_block(runs)}
</body></html>
"""
