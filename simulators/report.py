"""The HTML report of a simulation: one self-contained page, readable offline, charts drawn as inline SVG.

`render_report(document)` takes the KPI document of `simulators.kpis` and returns the page: the runs side
by side (one column per ruleset version and stock view), fill rate and oversold units hour by hour, the
channels as grouped bars, and the conservation check of every run. No script, no external asset.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

PALETTE = ("#1f6fb2", "#d9622b", "#2e9d5b", "#8a4fb5", "#c23b5a", "#7a7a7a", "#b59a1f", "#1fa5a5")
WIDTH, HEIGHT = 760, 240
PAD_L, PAD_R, PAD_T, PAD_B = 56, 16, 14, 34

KPI_ROWS: tuple[tuple[str, str, str], ...] = (
    ("orders", "orders and till sales", "int"),
    ("units_demanded", "units demanded", "int"),
    ("units_allocated", "units allocated", "int"),
    ("fill_rate", "fill rate (units)", "pct"),
    ("order_fill_rate", "orders filled in full", "pct"),
    ("lost_units", "lost sales (units)", "int"),
    ("oversold_units", "oversold units", "int"),
    ("split_shipments", "split shipments", "int"),
    ("mean_distance_km", "mean distance (km)", "float"),
    ("revenue", "revenue", "money"),
    ("transfers_requested", "transfers requested", "int"),
    ("transfers_approved", "transfers approved", "int"),
    ("transfers_routed", "transfers routed", "int"),
    ("transfers_rejected", "transfers rejected", "int"),
    ("transfers_executed", "transfers executed", "int"),
    ("transfers_expired", "transfers expired (no approval)", "int"),
    ("transfers_blocked", "transfers blocked at execution", "int"),
    ("approval_cycle_hours_p50", "approval cycle time p50 (h)", "float"),
    ("approval_cycle_hours_p90", "approval cycle time p90 (h)", "float"),
    ("markdowns_proposed", "markdowns proposed", "int"),
    ("markdowns_routed", "markdowns routed", "int"),
    ("markdowns_approved", "markdowns approved", "int"),
    ("reorders_raised", "reorders raised", "int"),
    ("reorders_for_review", "reorders for review", "int"),
    ("stock_end", "stock at the end (units)", "int"),
)


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{float(value) * 100:.1f} %"
    if kind == "float":
        return f"{float(value):,.1f}"
    if kind == "money":
        return f"{float(value):,.2f}"
    return f"{int(value):,}"


def run_title(run: dict[str, Any]) -> str:
    return f"{run['label']} / {run['view']}"


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = float(10 ** len(str(int(value)))) / 10
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * magnitude:
            return step * magnitude
    return float(value)


def line_chart(title: str, series: Sequence[tuple[str, Sequence[float]]], *, percent: bool = False) -> str:
    """An SVG line chart, one polyline per named series over a shared x axis (hours)."""
    points = max((len(values) for _, values in series), default=0)
    top = 1.0 if percent else _nice_max(max((max(values, default=0) for _, values in series), default=0))
    inner_w, inner_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B
    parts = [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i in range(5):
        y = PAD_T + inner_h * i / 4
        value = top * (4 - i) / 4
        label = f"{value * 100:.0f}%" if percent else f"{value:,.0f}"
        parts.append(f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{WIDTH - PAD_R}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{label}</text>')
    if points > 1:
        every = max(1, (points - 1) // 12)
        every = next((s for s in (1, 2, 3, 4, 6, 12, 24, 48) if s >= every), every)
        for hour in range(0, points, every):
            x = PAD_L + inner_w * hour / (points - 1)
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - PAD_B + 16}" text-anchor="middle" class="tick">{hour}h</text>'
            )
    for index, (name, values) in enumerate(series):
        if not values:
            continue
        coords = []
        for hour, value in enumerate(values):
            x = PAD_L + (inner_w * hour / (points - 1) if points > 1 else inner_w / 2)
            y = PAD_T + inner_h * (1 - min(float(value), top) / top)
            coords.append(f"{x:.1f},{y:.1f}")
        colour = PALETTE[index % len(PALETTE)]
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(coords)}">'
            f"<title>{escape(name)}</title></polyline>"
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    title: str, groups: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], *, percent: bool = False
) -> str:
    """Grouped vertical bars: one group per category (channel), one bar per series (run)."""
    top = 1.0 if percent else _nice_max(max((max(values, default=0) for _, values in series), default=0))
    inner_w, inner_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B
    parts = [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i in range(5):
        y = PAD_T + inner_h * i / 4
        value = top * (4 - i) / 4
        label = f"{value * 100:.0f}%" if percent else f"{value:,.0f}"
        parts.append(f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{WIDTH - PAD_R}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{label}</text>')
    n_groups = max(1, len(groups))
    group_w = inner_w / n_groups
    bar_w = group_w * 0.8 / max(1, len(series))
    for g, group in enumerate(groups):
        x0 = PAD_L + g * group_w + group_w * 0.1
        for s, (name, values) in enumerate(series):
            value = float(values[g]) if g < len(values) else 0.0
            h = inner_h * min(value, top) / top
            x = x0 + s * bar_w
            colour = PALETTE[s % len(PALETTE)]
            shown = f"{value * 100:.1f}%" if percent else f"{value:,.0f}"
            parts.append(
                f'<rect x="{x:.1f}" y="{PAD_T + inner_h - h:.1f}" width="{max(bar_w - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(name)}: {escape(group)} {shown}</title></rect>'
            )
        parts.append(
            f'<text x="{x0 + group_w * 0.4:.1f}" y="{HEIGHT - PAD_B + 16}" text-anchor="middle" '
            f'class="tick">{escape(group)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _legend(runs: Sequence[dict[str, Any]]) -> str:
    items = "".join(
        f'<span class="key"><span class="swatch" style="background:{PALETTE[i % len(PALETTE)]}"></span>'
        f"{escape(run_title(run))}</span>"
        for i, run in enumerate(runs)
    )
    return f'<p class="legend">{items}</p>'


def _kpi_table(runs: Sequence[dict[str, Any]]) -> str:
    head = "".join(f"<th>{escape(run_title(run))}</th>" for run in runs)
    rows = []
    for key, label, kind in KPI_ROWS:
        cells = "".join(f"<td>{_fmt(run['kpis'].get(key, 0), kind)}</td>" for run in runs)
        rows.append(f"<tr><th>{escape(label)}</th>{cells}</tr>")
    return f"<table><thead><tr><th>KPI</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _ruleset_table(runs: Sequence[dict[str, Any]]) -> str:
    rows = []
    for run in runs:
        refs = run.get("rulesets") or {}
        described = "; ".join(
            f"{kind}: {ref['name']}@{ref['version']} ({ref['sha256'][:12]})"
            for kind, ref in sorted(refs.items())
        )
        rows.append(
            f"<tr><th>{escape(run_title(run))}</th><td>{escape(described or 'built-in defaults')}</td></tr>"
        )
    return f"<table><tbody>{''.join(rows)}</tbody></table>"


def _conservation_table(runs: Sequence[dict[str, Any]]) -> str:
    rows = []
    for run in runs:
        c = run["conservation"]
        verdict = "holds" if c["holds"] else "BROKEN"
        rows.append(
            f"<tr><th>{escape(run_title(run))}</th><td>{c['start']:,} + {c['receipts']:,} + "
            f"{c['returns_restocked']:,}</td><td>{c['end']:,} + {c['sold']:,} + {c['damaged']:,} + "
            f'{c["in_transit"]:,}</td><td class="{"ok" if c["holds"] else "bad"}">{verdict}</td></tr>'
        )
    return (
        "<table><thead><tr><th>run</th><th>start + receipts + returns restocked</th>"
        "<th>end + sold + damaged + in transit</th><th></th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;
color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}th,td{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
th:first-child{text-align:left}thead th{background:#f5f5f5}.ok{color:#2e7d32}.bad{color:#c62828;font-weight:bold}
.grid{stroke:#e4e4e4}.tick{font-size:11px;fill:#555}.legend .key{margin-right:16px;white-space:nowrap}
.swatch{display:inline-block;width:12px;height:12px;margin-right:5px;vertical-align:-1px}.muted{color:#666}
"""


def render_report(document: dict[str, Any]) -> str:
    scenario = document["scenario"]
    runs: list[dict[str, Any]] = document["runs"]
    events = document["events"]
    channels = sorted({name for run in runs for name in run["channels"]})
    fill = line_chart(
        "fill rate by hour", [(run_title(r), r["series"]["fill_rate"]) for r in runs], percent=True
    )
    oversold = line_chart(
        "oversold units by hour", [(run_title(r), r["series"]["oversold_units"]) for r in runs]
    )
    lost = line_chart("lost sales by hour", [(run_title(r), r["series"]["lost_units"]) for r in runs])
    channel_fill = bar_chart(
        "fill rate by channel",
        channels,
        [(run_title(r), [r["channels"].get(c, {}).get("fill_rate", 0.0) for c in channels]) for r in runs],
        percent=True,
    )
    channel_short = bar_chart(
        "lost and oversold units by channel",
        channels,
        [
            (
                run_title(r),
                [
                    r["channels"].get(c, {}).get("lost_units", 0)
                    + r["channels"].get(c, {}).get("oversold_units", 0)
                    for c in channels
                ],
            )
            for r in runs
        ],
    )
    views = ", ".join(
        f"{escape(name)}: {escape(view)}" for name, view in sorted(scenario["channels"].items())
    )
    legend = _legend(runs)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Simulation: {escape(scenario["name"])}</title>
<style>{STYLE}</style></head><body>
<h1>Simulation: {escape(scenario["name"])}</h1>
<p class="muted">seed {scenario["seed"]}, from {escape(scenario["start"])} for {scenario["duration_hours"]} hours;
{scenario["locations"]:,} locations, {scenario["skus"]:,} SKUs; events from {escape(events["source"])}:
{events["orders"]:,} orders, {events["sales"]:,} till sales, {events["returns"]:,} returns,
{events["receipts"]:,} receipts. Engine {escape(document["engine"])}.
Stock views: {views}.</p>
<h2>Versions side by side</h2>
{_kpi_table(runs)}
<h2>Fill rate by hour</h2>{legend}{fill}
<h2>Oversold units by hour</h2>
<p class="muted">Units a batch-synced channel accepted from its stale stock view that live stock could not
fulfil.</p>{legend}{oversold}
<h2>Lost sales by hour</h2>{legend}{lost}
<h2>Channels</h2>{legend}
<h3>Fill rate</h3>{channel_fill}
<h3>Lost and oversold units</h3>{channel_short}
<h2>Rulesets</h2>{_ruleset_table(runs)}
<h2>Conservation check</h2>{_conservation_table(runs)}
</body></html>
"""
