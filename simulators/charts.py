"""Inline SVG charts for the simulation report: hour-by-hour lines on a calendar axis, and grouped bars.

The charts scale to the width of the page (a `viewBox` and no fixed width), so that they print on A4
without being cut. Each series has its own colour, dash pattern and marker shape, so that two series drawn
on top of each other stay apart; hours without a value (no demand) are gaps, not points. Unit counts get
whole-number axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape

PALETTE = ("#1f6fb2", "#d9622b", "#2e9d5b", "#8a4fb5", "#c23b5a", "#5f5f5f", "#9a7d0a", "#138d8d")
DASHES = ("", "7 4", "2 3", "10 3 2 3", "4 4", "1 2", "12 4", "6 2 2 2")
MARKERS = ("circle", "square", "triangle", "diamond", "cross", "circle", "square", "triangle")
WIDTH, HEIGHT = 720, 250
PAD_L, PAD_R, PAD_T, PAD_B = 58, 14, 18, 44
TIME_STEPS = (1, 2, 3, 6, 12, 24, 48, 72, 168, 336, 672)


@dataclass(frozen=True)
class Window:
    """A shaded span of the time axis (a promotion), in hours since the start."""

    start: float
    end: float
    label: str


@dataclass(frozen=True)
class TimeAxis:
    """Hour 0 of the run on the calendar (UTC) and the number of hours, with the windows to shade."""

    start: datetime
    hours: int
    windows: list[Window] = field(default_factory=list)


def style(index: int) -> tuple[str, str, str]:
    """The colour, dash pattern and marker of the series at `index`."""
    return PALETTE[index % len(PALETTE)], DASHES[index % len(DASHES)], MARKERS[index % len(MARKERS)]


def marker(shape: str, x: float, y: float, colour: str, size: float = 3.6) -> str:
    s = size
    if shape == "square":
        return f'<rect x="{x - s:.1f}" y="{y - s:.1f}" width="{2 * s:.1f}" height="{2 * s:.1f}" fill="{colour}"/>'
    if shape == "triangle":
        return (
            f'<polygon points="{x:.1f},{y - s * 1.2:.1f} {x - s:.1f},{y + s * 0.8:.1f} '
            f'{x + s:.1f},{y + s * 0.8:.1f}" fill="{colour}"/>'
        )
    if shape == "diamond":
        return (
            f'<polygon points="{x:.1f},{y - s * 1.3:.1f} {x + s:.1f},{y:.1f} {x:.1f},{y + s * 1.3:.1f} '
            f'{x - s:.1f},{y:.1f}" fill="{colour}"/>'
        )
    if shape == "cross":
        return (
            f'<path d="M{x - s:.1f},{y - s:.1f}L{x + s:.1f},{y + s:.1f}M{x - s:.1f},{y + s:.1f}'
            f'L{x + s:.1f},{y - s:.1f}" stroke="{colour}" stroke-width="2"/>'
        )
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{s:.1f}" fill="{colour}"/>'


def key_sample(index: int) -> str:
    """A small SVG of the series' line and marker, for a legend."""
    colour, dash, shape = style(index)
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<svg class="sample" viewBox="0 0 36 12" width="36" height="12" aria-hidden="true">'
        f'<line x1="1" y1="6" x2="35" y2="6" stroke="{colour}" stroke-width="2"{dashed}/>'
        f"{marker(shape, 18, 6, colour, 3.2)}</svg>"
    )


def value_ticks(top: float, *, integer: bool, percent: bool) -> tuple[float, list[float]]:
    """The axis top and its tick values: 0-100 % in quarters for a share, whole numbers for a count (never
    two ticks with the same label), else 1, 2, 2.5 or 5 times a power of ten."""
    if percent:
        return 1.0, [0.0, 0.25, 0.5, 0.75, 1.0]
    if top <= 0:
        top = 1.0
    raw = top / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    steps = (1.0, 2.0, 5.0, 10.0) if integer and magnitude < 10 else (1.0, 2.0, 2.5, 5.0, 10.0)
    step = next(s * magnitude for s in steps if s * magnitude >= raw)
    if integer:
        step = max(1.0, float(math.ceil(step)))
    count = max(1, math.ceil(top / step - 1e-9))
    return step * count, [step * i for i in range(count + 1)]


def _tick_label(value: float, *, percent: bool) -> str:
    if percent:
        return f"{value * 100:.0f} %"
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _time_ticks(axis: TimeAxis) -> tuple[int, list[float]]:
    """An hour step with at most nine labels, and where (hours since the start) the labels go: on whole
    hours that are multiples of the step on the clock, or on every (second, third...) midnight for a step
    of a day or more."""
    step = next((s for s in TIME_STEPS if axis.hours / s <= 9), TIME_STEPS[-1])
    into_hour = (axis.start.minute * 60 + axis.start.second) % 3600
    lead = ((3600 - into_hour) % 3600) / 3600
    ticks: list[float] = []
    midnights = 0
    for k in range(axis.hours + 1):
        at = lead + k
        if at > axis.hours:
            break
        moment = axis.start + timedelta(hours=at)
        if step < 24:
            if moment.hour % step == 0:
                ticks.append(at)
        elif moment.hour == 0:
            if midnights % (step // 24) == 0:
                ticks.append(at)
            midnights += 1
    return step, ticks


def _frame(title: str) -> list[str]:
    return [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
    ]


def _value_axis(parts: list[str], top: float, ticks: Sequence[float], *, percent: bool) -> None:
    inner_h = HEIGHT - PAD_T - PAD_B
    for value in ticks:
        y = PAD_T + inner_h * (1 - value / top)
        parts.append(f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{WIDTH - PAD_R}" y2="{y:.1f}" class="grid"/>')
        parts.append(
            f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{_tick_label(value, percent=percent)}</text>"
        )


def line_chart(
    title: str,
    series: Sequence[tuple[str, Sequence[float | None]]],
    axis: TimeAxis,
    *,
    percent: bool = False,
    integer: bool = False,
) -> str:
    """One line per series over the calendar hours of `axis`; a value stands for its whole hour and is
    drawn at the hour's middle; None is a gap."""
    inner_w, inner_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B
    hours = max(1, axis.hours)
    highest = max((float(v) for _, values in series for v in values if v is not None), default=0.0)
    top, ticks = value_ticks(highest, integer=integer, percent=percent)
    parts = _frame(title)

    def x_of(hour: float) -> float:
        return PAD_L + inner_w * min(max(hour, 0.0), hours) / hours

    for window in axis.windows:
        x0, x1 = x_of(window.start), x_of(window.end)
        if x1 <= x0:
            continue
        parts.append(
            f'<rect x="{x0:.1f}" y="{PAD_T}" width="{x1 - x0:.1f}" height="{inner_h}" class="window">'
            f"<title>{escape(window.label)}</title></rect>"
        )
        parts.append(f'<text x="{x0 + 3:.1f}" y="{PAD_T - 5}" class="wlabel">{escape(window.label)}</text>')
    _value_axis(parts, top, ticks, percent=percent)
    step, time_ticks = _time_ticks(axis)
    last_day = None
    for hour in time_ticks:
        moment = axis.start + timedelta(hours=hour)
        x = x_of(hour)
        parts.append(
            f'<line x1="{x:.1f}" y1="{PAD_T + inner_h}" x2="{x:.1f}" y2="{PAD_T + inner_h + 4}" class="axis"/>'
        )
        day = moment.strftime("%a %d %b")
        first = moment.strftime("%H:%M") if step < 24 else day
        # labels near the right edge end at their tick, so that they stay inside the chart
        anchor = "end" if x > WIDTH - PAD_R - 30 else "middle"
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - PAD_B + 16}" text-anchor="{anchor}" class="tick">{first}</text>'
        )
        if step < 24 and day != last_day:
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - PAD_B + 30}" text-anchor="{anchor}" class="tick">{day}</text>'
            )
        last_day = day
    parts.append(
        f'<line x1="{PAD_L}" y1="{PAD_T + inner_h}" x2="{WIDTH - PAD_R}" y2="{PAD_T + inner_h}" class="axis"/>'
    )
    every = max(1, hours // 12)
    for index, (name, values) in enumerate(series):
        colour, dash, shape = style(index)
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        segments: list[list[tuple[float, float]]] = [[]]
        for hour, value in enumerate(values):
            if value is None:
                if segments[-1]:
                    segments.append([])
                continue
            y = PAD_T + inner_h * (1 - min(float(value), top) / top)
            segments[-1].append((x_of(hour + 0.5), y))
        group = [f'<g class="series"><title>{escape(name)}</title>']
        for segment in segments:
            if len(segment) > 1:
                coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in segment)
                group.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="1.8"{dashed} points="{coords}"/>'
                )
        # markers: at every `every`-th hour, shifted per series so that identical lines show all of them,
        # and on every isolated point (an hour with demand between two without)
        offset = (index * max(1, every // max(1, len(series)))) % every
        for segment in segments:
            for n, (x, y) in enumerate(segment):
                hour_index = round((x - PAD_L) / inner_w * hours - 0.5)
                if len(segment) == 1 or hour_index % every == offset or (n == 0 and len(segments) > 1):
                    group.append(marker(shape, x, y, colour))
        group.append("</g>")
        parts.extend(group)
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    title: str,
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    percent: bool = False,
    integer: bool = False,
) -> str:
    """Grouped vertical bars, one group per category (channel), one bar per series (run), the value
    written above each bar."""
    inner_w, inner_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B
    highest = max((float(v) for _, values in series for v in values), default=0.0)
    top, ticks = value_ticks(highest, integer=integer, percent=percent)
    parts = _frame(title)
    _value_axis(parts, top, ticks, percent=percent)
    n_groups = max(1, len(groups))
    group_w = inner_w / n_groups
    bar_w = group_w * 0.8 / max(1, len(series))
    for g, group in enumerate(groups):
        x0 = PAD_L + g * group_w + group_w * 0.1
        for s, (name, values) in enumerate(series):
            value = float(values[g]) if g < len(values) else 0.0
            h = inner_h * min(value, top) / top
            x = x0 + s * bar_w
            colour, _, _ = style(s)
            shown = f"{value * 100:.1f} %" if percent else _tick_label(value, percent=False)
            parts.append(
                f'<rect x="{x:.1f}" y="{PAD_T + inner_h - h:.1f}" width="{max(bar_w - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(name)}: {escape(group)} {shown}</title></rect>'
            )
            if bar_w >= 40:
                parts.append(
                    f'<text x="{x + bar_w / 2 - 1:.1f}" y="{PAD_T + inner_h - h - 3:.1f}" text-anchor="middle" '
                    f'class="val">{shown}</text>'
                )
        parts.append(
            f'<text x="{x0 + group_w * 0.4:.1f}" y="{HEIGHT - PAD_B + 16}" text-anchor="middle" '
            f'class="tick">{escape(group)}</text>'
        )
    parts.append(
        f'<line x1="{PAD_L}" y1="{PAD_T + inner_h}" x2="{WIDTH - PAD_R}" y2="{PAD_T + inner_h}" class="axis"/>'
    )
    parts.append("</svg>")
    return "".join(parts)
