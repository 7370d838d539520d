"""The tables of the simulation report: KPIs by group with the differences between runs highlighted, the
spread over seeds, the top SKUs and locations by lost and oversold units, skipped events and the
conservation check written out as an equation.

Every table reads the KPI document of `simulators.kpis` (and `simulators.multirun`) and takes what is
there: a KPI it does not know is shown under the group its name suggests, a missing one is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

# (key, label, kind) per group; kinds: int, pct, float, money
SERVICE: tuple[tuple[str, str, str], ...] = (
    ("orders", "orders and till sales", "int"),
    ("units_demanded", "units demanded", "int"),
    ("units_allocated", "units allocated (reserved or sold)", "int"),
    ("fill_rate", "fill rate (units)", "pct"),
    ("order_fill_rate", "orders filled in full", "pct"),
    ("lost_units", "lost sales (units)", "int"),
    ("oversold_units", "oversold units", "int"),
    ("split_shipments", "split shipments (orders)", "int"),
    ("shipments", "shipments", "int"),
    ("mean_distance_km", "mean distance per shipment (km)", "float"),
    ("revenue", "revenue", "money"),
)
REPLENISHMENT: tuple[tuple[str, str, str], ...] = (
    ("reorders_raised", "reorders raised", "int"),
    ("reorders_released", "reorders released", "int"),
    ("reorders_unfilled", "reorders released that the DC could not fill", "int"),
    ("reorders_for_review", "reorders sent for review (not released)", "int"),
    ("reorder_units", "units released", "int"),
    ("reorder_units_moved", "units moved from DCs to stores", "int"),
    ("reorder_units_ordered", "units ordered from suppliers", "int"),
    ("reorder_units_short", "units released that the DC could not send", "int"),
    ("reorder_units_received", "released units arrived", "int"),
    ("reorder_units_on_order", "released units on their way at the end", "int"),
    ("on_order_units", "units on purchase orders at the end", "int"),
)
TRANSFERS: tuple[tuple[str, str, str], ...] = (
    ("transfers_requested", "transfers requested", "int"),
    ("transfers_approved", "transfers approved", "int"),
    ("transfers_routed", "transfers routed to an approver", "int"),
    ("transfers_rejected", "transfers rejected", "int"),
    ("transfers_executed", "transfers executed (units moved)", "int"),
    ("transfers_expired", "transfers expired (no approval)", "int"),
    ("transfers_blocked", "transfers blocked at execution", "int"),
    ("approval_cycle_hours_p50", "approval cycle time p50 (h)", "float"),
    ("approval_cycle_hours_p90", "approval cycle time p90 (h)", "float"),
    ("markdowns_proposed", "markdowns proposed", "int"),
    ("markdowns_routed", "markdowns routed", "int"),
    ("markdowns_approved", "markdowns approved", "int"),
    ("markdowns_rejected", "markdowns rejected", "int"),
)
STOCK: tuple[tuple[str, str, str], ...] = (
    ("stock_end", "sellable stock at the end (units)", "int"),
    ("open_reservations", "reservations open at the end", "int"),
)
GROUPS = {"service": SERVICE, "replenishment": REPLENISHMENT, "transfers": TRANSFERS, "stock": STOCK}
KNOWN = {key for rows in GROUPS.values() for key, _, _ in rows} | {"order_decisions"}


def run_title(run: dict[str, Any]) -> str:
    return f"{run['label']} / {run['view']}"


def fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{float(value) * 100:.1f} %"
    if kind == "float":
        return f"{float(value):,.1f}"
    if kind == "money":
        return f"{float(value):,.2f}"
    return f"{round(float(value)):,}"


def fmt_delta(delta: float, kind: str) -> str:
    if kind == "pct":
        return f"{delta * 100:+.1f} pts"
    if kind == "float":
        return f"{delta:+,.2f}"
    if kind == "money":
        return f"{delta:+,.1f}"
    return f"{round(delta):+,}"


def _group_of(key: str) -> str:
    if any(word in key for word in ("reorder", "replen", "on_order", "purchase", "released", "moved")):
        return "replenishment"
    if any(word in key for word in ("transfer", "approval", "markdown")):
        return "transfers"
    if key.startswith("stock") or "reservation" in key:
        return "stock"
    return "service"


def _kind_of(key: str, values: Sequence[Any]) -> str:
    if key.endswith(("_rate", "_share")):
        return "pct"
    if any(isinstance(v, float) and v != int(v) for v in values):
        return "float"
    return "int"


def kpi_rows(runs: Sequence[dict[str, Any]], group: str) -> list[tuple[str, str, str, list[Any]]]:
    """(key, label, kind, value per run) of the group: its known KPIs present in any run, then the KPIs
    the report does not know whose names belong to the group (a mapping of counts gives a row per key)."""
    rows: list[tuple[str, str, str, list[Any]]] = []
    for key, label, kind in GROUPS[group]:
        if any(key in run["kpis"] for run in runs):
            rows.append((key, label, kind, [run["kpis"].get(key) for run in runs]))
    extra = sorted({key for run in runs for key in run["kpis"]} - KNOWN)
    for key in extra:
        if _group_of(key) != group:
            continue
        values = [run["kpis"].get(key) for run in runs]
        if all(isinstance(v, dict) or v is None for v in values):
            for sub in sorted({s for v in values if v for s in v}):
                subvalues = [(v or {}).get(sub) for v in values]
                rows.append((f"{key}.{sub}", f"{key.replace('_', ' ')}: {sub}", "int", subvalues))
            continue
        if all(isinstance(v, int | float) or v is None for v in values):
            rows.append((key, key.replace("_", " "), _kind_of(key, values), values))
    return rows


def kpi_table(runs: Sequence[dict[str, Any]], group: str) -> str:
    """The group's KPIs, one column per run; a value that differs from the first run's is highlighted with
    its difference."""
    rows = kpi_rows(runs, group)
    if not rows:
        return '<p class="muted">Nothing counted in this group.</p>'
    head = "".join(f"<th>{escape(run_title(run))}</th>" for run in runs)
    body = []
    for _, label, kind, values in rows:
        first = values[0]
        differs = any(v != first for v in values)
        cells = []
        for index, value in enumerate(values):
            text = fmt(value, kind)
            if index and value != first:
                delta = ""
                if isinstance(value, int | float) and isinstance(first, int | float):
                    delta = f' <span class="delta">{fmt_delta(float(value) - float(first), kind)}</span>'
                cells.append(f'<td class="diff">{text}{delta}</td>')
            else:
                cells.append(f"<td>{text}</td>")
        mark = ' class="differs"' if differs else ""
        body.append(f"<tr{mark}><th>{escape(label)}</th>{''.join(cells)}</tr>")
    return f'<table class="kpis"><thead><tr><th>KPI</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def top_table(runs: Sequence[dict[str, Any]], field: str, what: str, limit: int = 10) -> str:
    """The `limit` ids (SKUs, locations, regions) with the most lost plus oversold units in any run, with
    each run's lost and oversold units."""
    totals: dict[str, int] = {}
    for run in runs:
        for key, counts in (run.get(field) or {}).items():
            units = int(counts.get("lost_units", 0)) + int(counts.get("oversold_units", 0))
            totals[key] = max(totals.get(key, 0), units)
    ranked = sorted((k for k, v in totals.items() if v > 0), key=lambda k: (-totals[k], k))
    if not ranked:
        return f'<p class="muted">No {escape(what)} lost or oversold a unit.</p>'
    shown = ranked[:limit]
    head = "".join(f"<th>{escape(run_title(run))}<br><small>lost / oversold</small></th>" for run in runs)
    body = []
    for key in shown:
        cells = []
        for run in runs:
            counts = (run.get(field) or {}).get(key, {})
            lost, oversold = int(counts.get("lost_units", 0)), int(counts.get("oversold_units", 0))
            cells.append(f"<td>{lost:,} / {oversold:,}</td>")
        body.append(f"<tr><th>{escape(key)}</th>{''.join(cells)}</tr>")
    more = len(ranked) - len(shown)
    note = f'<p class="muted">{more:,} more {escape(what)} lost or oversold units.</p>' if more > 0 else ""
    return (
        f'<table class="top"><thead><tr><th>{escape(what)}</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>{note}"
    )


def _skipped_rows(skipped: Any) -> dict[tuple[str, str], int]:
    """{(type, reason): count} from `{type: {reason: count}}` or `{type: count}`."""
    rows: dict[tuple[str, str], int] = {}
    if not isinstance(skipped, dict):
        return rows
    for kind, value in skipped.items():
        if isinstance(value, dict):
            for reason, count in value.items():
                if isinstance(count, int) and count:
                    rows[(str(kind), str(reason))] = count
        elif isinstance(value, int) and value:
            rows[(str(kind), "")] = value
    return rows


def skipped_table(document: dict[str, Any], runs: Sequence[dict[str, Any]]) -> str:
    """Events skipped, by type and reason: one column when every run skipped the same (or only the
    document counts them), else one per run; `none skipped` when there are none."""
    per_run = [
        (run_title(run), _skipped_rows(run["events_skipped"])) for run in runs if "events_skipped" in run
    ]
    whole = document.get("events_skipped", (document.get("events") or {}).get("skipped"))
    if per_run and all(rows == per_run[0][1] for _, rows in per_run):
        sources = [("every run", per_run[0][1])]
    elif per_run:
        sources = per_run
    else:
        sources = [("every run", _skipped_rows(whole))]
    keys = sorted({key for _, rows in sources for key in rows})
    if not keys:
        return '<p class="ok">None skipped: every event of the stream was replayed.</p>'
    head = "".join(f"<th>{escape(name)}</th>" for name, _ in sources)
    body = "".join(
        f"<tr><th>{escape(kind)}</th><td class='reason'>{escape(reason.replace('_', ' ') or '-')}</td>"
        + "".join(f"<td>{rows.get((kind, reason), 0):,}</td>" for _, rows in sources)
        + "</tr>"
        for kind, reason in keys
    )
    return (
        f'<table><thead><tr><th>event</th><th class="reason">reason</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


LEFT = (("start", "stock at the start"), ("receipts", "received"), ("returns_restocked", "returns restocked"))
RIGHT = (
    ("sold", "sold"),
    ("end", "on hand at the end"),
    ("damaged", "damaged"),
    ("in_transit", "in transit"),
)


def _side(check: dict[str, Any], terms: Sequence[tuple[str, str]]) -> tuple[str, int]:
    present = [(label, int(check[key])) for key, label in terms if key in check]
    text = " + ".join(f'{escape(label)} <span class="num">{value:,}</span>' for label, value in present)
    return text, sum(value for _, value in present)


def conservation_block(runs: Sequence[dict[str, Any]]) -> str:
    """Per run: stock at the start + received + returns restocked = sold + on hand + damaged + in transit,
    with the numbers and both sums."""
    items = []
    for run in runs:
        check = run["conservation"]
        left, left_sum = _side(check, LEFT)
        right, right_sum = _side(check, RIGHT)
        holds = bool(check.get("holds"))
        verdict = (
            '<span class="ok">holds</span>'
            if holds
            else f'<span class="bad">BROKEN: {abs(left_sum - right_sum):,} units unaccounted for</span>'
        )
        known = {key for key, _ in LEFT + RIGHT} | {"holds"}
        others = [
            f"{escape(key.replace('_', ' '))} {int(value):,}"
            for key, value in sorted(check.items())
            if key not in known and isinstance(value, int | float) and not isinstance(value, bool)
        ]
        extra = f'<br><span class="muted">also counted: {"; ".join(others)}</span>' if others else ""
        items.append(
            f"<li><strong>{escape(run_title(run))}</strong>: {left} = {right}<br>"
            f'<span class="num">{left_sum:,}</span> = <span class="num">{right_sum:,}</span>: {verdict}{extra}</li>'
        )
    return f'<ul class="equations">{"".join(items)}</ul>'


def ruleset_table(runs: Sequence[dict[str, Any]]) -> str:
    rows = []
    for run in runs:
        refs = run.get("rulesets") or {}
        described = "; ".join(
            f"{kind}: {ref['name']}@{ref['version']} ({str(ref.get('sha256', ''))[:12]})"
            for kind, ref in sorted(refs.items())
        )
        rows.append(
            f"<tr><th>{escape(run_title(run))}</th>"
            f'<td class="text">{escape(described or "built-in defaults")}</td></tr>'
        )
    return f"<table><tbody>{''.join(rows)}</tbody></table>"
