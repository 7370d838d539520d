"""Which events of a stream a run can replay, and what is skipped, by event type and reason.

A recorded log may name what the scenario does not know. `screen(world, events)` keeps the events a run can
replay and counts the others under `skipped[type][reason]`: types are the log's (`order`, `sale`,
`return`, `receipt`) and `order_line` for the lines of an order that name an unknown SKU (the rest of the
order replays); the reasons are in `REASONS`. A run adds the skips only it can see (a return of an order
it never sent). `check_share` refuses a log that replays nothing or skips more than the allowed share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec

from simulators.events import Event, Order, Receipt, Return, Sale
from simulators.scenario import World

Skipped = dict[str, dict[str, int]]

# reason -> plain words, in the order an event is checked (the first that applies is counted)
REASONS = {
    "outside_horizon": "outside the horizon",
    "bad_channel": "bad channel",
    "unknown_location": "unknown location",
    "unknown_sku": "unknown SKU",
    "unknown_order": "order not in the replayed log",
    "not_sent": "of an order the run did not send",
}
TYPE_WORDS = {
    "order": "orders",
    "sale": "till sales",
    "return": "returns",
    "receipt": "receipts",
    "order_line": "order lines",
}


@dataclass(frozen=True)
class Screened:
    """The events to replay, in time order, and what was left out."""

    events: list[Event]
    read: int
    skipped: Skipped = field(default_factory=dict)
    first_at: int | None = None  # the earliest and latest event read, in seconds since the start
    last_at: int | None = None

    @property
    def skipped_events(self) -> int:
        """Whole events skipped (the lines left out of orders that replay are not events)."""
        return sum(sum(reasons.values()) for kind, reasons in self.skipped.items() if kind != "order_line")


def add(skipped: Skipped, kind: str, reason: str, n: int = 1) -> None:
    reasons = skipped.setdefault(kind, {})
    reasons[reason] = reasons.get(reason, 0) + n


def merged(*parts: Mapping[str, Mapping[str, int]]) -> Skipped:
    """The counts of several tallies added up, keys sorted."""
    out: Skipped = {}
    for part in parts:
        for kind, reasons in part.items():
            for reason, n in reasons.items():
                if n:
                    add(out, kind, reason, n)
    return {kind: dict(sorted(reasons.items())) for kind, reasons in sorted(out.items())}


def screen(world: World, events: Iterable[Event]) -> Screened:
    """Keep the events of `events` a run of `world` can replay; count the rest by type and reason."""
    horizon = world.scenario.duration_hours * 3600
    kinds = {channel.id: channel.kind for channel in world.channels}
    locations = {location.id for location in world.locations}
    skus = {sku.id for sku in world.skus}
    kept: list[Event] = []
    sent: set[str] = set()  # ids of the orders and till sales replayed, which returns may name
    skipped: Skipped = {}
    read = 0
    first: int | None = None
    last: int | None = None
    for event in events:
        read += 1
        at = event.at
        first = at if first is None or at < first else first
        last = at if last is None or at > last else last
        if at < 0 or at >= horizon:
            reason: str | None = "outside_horizon"
        elif isinstance(event, Order):
            reason = _order(event, kinds, locations)
            if reason is None:
                lines = tuple(line for line in event.lines if line.sku in skus)
                if not lines:
                    reason = "unknown_sku"
                elif len(lines) < len(event.lines):
                    add(skipped, "order_line", "unknown_sku", len(event.lines) - len(lines))
                    event = msgspec.structs.replace(event, lines=lines)
        elif isinstance(event, Sale):
            reason = (
                "bad_channel"
                if kinds.get(event.channel) != "pos"
                else "unknown_location"
                if event.store not in locations
                else "unknown_sku"
                if event.sku not in skus
                else None
            )
        elif isinstance(event, Return):
            if event.order_id is None and event.location not in locations:
                reason = "unknown_location"
            elif event.sku not in skus:
                reason = "unknown_sku"
            elif event.order_id is not None and event.order_id not in sent:
                reason = "unknown_order"
            else:
                reason = None
        else:
            reason = (
                "unknown_location"
                if event.location not in locations
                else "unknown_sku"
                if event.sku not in skus
                else None
            )
        if reason is not None:
            add(skipped, event_type(event), reason)
            continue
        if isinstance(event, Order | Sale):
            sent.add(event.id)
        kept.append(event)
    return Screened(kept, read, merged(skipped), first, last)


def _order(order: Order, kinds: Mapping[str, str], locations: set[str]) -> str | None:
    if kinds.get(order.channel) != "online":
        return "bad_channel"
    if order.fulfillment == "pickup" and order.store not in locations:
        return "unknown_location"
    return None


def event_type(event: Event) -> str:
    if isinstance(event, Order):
        return "order"
    if isinstance(event, Sale):
        return "sale"
    if isinstance(event, Return):
        return "return"
    assert isinstance(event, Receipt)
    return "receipt"


def describe(skipped: Mapping[str, Mapping[str, int]]) -> list[str]:
    """One plain line per event type, e.g. `till sales: 9 unknown location, 2 outside the horizon`."""
    lines = []
    for kind, reasons in skipped.items():
        parts = [f"{n:,} {REASONS.get(reason, reason)}" for reason, n in reasons.items() if n]
        if parts:
            lines.append(f"{TYPE_WORDS.get(kind, kind)}: {', '.join(parts)}")
    return lines


class TooManySkipped(ValueError):
    """A log replays nothing, or skips more than the allowed share of its events."""


def check_share(screened: Screened, world: World, source: str, max_share: float) -> None:
    """Refuse a log that replays none of its events or skips more than `max_share` of them."""
    read = screened.read
    if read == 0:
        raise TooManySkipped(f"{source} holds no events: nothing to replay")
    skipped = screened.skipped_events
    start = world.start
    end = start + timedelta(hours=world.scenario.duration_hours)
    horizon = f"{_stamp(start)} to {_stamp(end)}"
    outside = sum(reasons.get("outside_horizon", 0) for reasons in screened.skipped.values())
    if not screened.events:
        if outside == read and screened.first_at is not None and screened.last_at is not None:
            first = _stamp(start + timedelta(seconds=screened.first_at))
            last = _stamp(start + timedelta(seconds=screened.last_at))
            raise TooManySkipped(
                f"none of the {read:,} events of {source} falls within the scenario's horizon, {horizon} "
                f"(its start and duration_hours); the log runs from {first} to {last}. "
                "Check the scenario's start"
            )
        raise TooManySkipped(
            f"none of the {read:,} events of {source} can be replayed: "
            + "; ".join(describe(screened.skipped))
        )
    if skipped > max_share * read:
        raise TooManySkipped(
            f"{skipped:,} of the {read:,} events of {source} ({_percent(skipped / read)}) would be skipped, "
            f"more than the allowed {_percent(max_share)} (scenario field max_skipped_share, option "
            f"--max-skipped): "
            + "; ".join(describe(screened.skipped))
            + (f" (the horizon is {horizon})" if outside else "")
        )


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _percent(share: float) -> str:
    text = f"{share * 100:.2f}".rstrip("0").rstrip(".")
    return f"{text} %"


def load_stream(world: World, log: str | None, max_share: float | None = None) -> tuple[Screened, str]:
    """The screened stream to run and the name of its source: the recorded log at `log` (refused, by
    `TooManySkipped`, when it replays nothing or skips more than `max_share`, default the scenario's
    `max_skipped_share`), or else the generated stream."""
    from pathlib import Path

    from simulators.events import read_events
    from simulators.generator import generate_events

    if log is None:
        return screen(world, generate_events(world)), "generated"
    source = Path(log).name
    screened = screen(world, read_events(log, world.start))
    share = world.scenario.max_skipped_share if max_share is None else max_share
    check_share(screened, world, source, share)
    return screened, source


def parse_share(text: str) -> float:
    """A share given as a fraction (`0.02`) or a percentage (`2%`), in 0..1."""
    value = float(text[:-1]) / 100 if text.strip().endswith("%") else float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{text}: expected a share in 0..1 or a percentage such as 2%")
    return value


def skipped_lines(document: Mapping[str, Any]) -> list[str]:
    """What a simulation skipped, for stdout: the events of the source no run could replay, then what
    each run skipped on its own (returns of orders it never sent)."""
    events = document["events"]
    read = events.get("read", 0)
    skipped = events.get("skipped", {})
    whole = sum(sum(r.values()) for kind, r in skipped.items() if kind != "order_line")
    share = f" ({_percent(whole / read)})" if read else ""
    out = [f"skipped {whole:,} of {read:,} events of {events['source']}{share}"]
    out += [f"  {line}" for line in describe(skipped)]
    for run in document["runs"]:
        own = {
            kind: {reason: n - skipped.get(kind, {}).get(reason, 0) for reason, n in reasons.items()}
            for kind, reasons in run.get("events_skipped", {}).items()
        }
        lines = describe(own)
        if lines:
            out.append(f"  and in {run['label']} / {run['view']}: {'; '.join(lines)}")
    return out
