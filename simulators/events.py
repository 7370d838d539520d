"""The simulator's event stream and its recorded forms (JSON Lines and CSV).

In memory an event carries `at`, whole seconds since the scenario start. In a file it carries `time`, an
ISO 8601 UTC timestamp, so that a retailer's own history (orders, POS sales, returns, receipts) can be
replayed. `write_events` / `read_events` pick the format from the file suffix (.jsonl or .csv).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec


class OrderLine(msgspec.Struct, frozen=True, gc=False):
    sku: str
    qty: int


class Order(msgspec.Struct, tag="order", tag_field="type", frozen=True, gc=False):
    """A customer order from a non-POS channel; `store` is the pickup store for click-and-collect."""

    at: int
    id: str
    channel: str
    fulfillment: str
    region: str
    lat: float
    lon: float
    lines: tuple[OrderLine, ...]
    store: str | None = None
    tier: str = "standard"


class Sale(msgspec.Struct, tag="sale", tag_field="type", frozen=True, gc=False):
    """A sale at a store till: the customer takes the units off the shelf."""

    at: int
    id: str
    channel: str
    store: str
    sku: str
    qty: int


class Return(msgspec.Struct, tag="return", tag_field="type", frozen=True, gc=False):
    """Units coming back; to `location`, or (when absent) to the location that fulfilled `order_id`."""

    at: int
    id: str
    sku: str
    qty: int
    order_id: str | None = None
    location: str | None = None
    restock: bool = True


class Receipt(msgspec.Struct, tag="receipt", tag_field="type", frozen=True, gc=False):
    """A delivery booked into a location's sellable stock."""

    at: int
    id: str
    location: str
    sku: str
    qty: int


Event = Order | Sale | Return | Receipt


class EventLogError(ValueError):
    """A recorded event log cannot be read; the message names the line and the field."""


def _iso(start: datetime, at: int) -> str:
    return (start + timedelta(seconds=at)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(start: datetime, text: str, where: str) -> int:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise EventLogError(f"{where}.time: {text!r} is not an ISO 8601 timestamp") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int((moment - start).total_seconds())


# ---------------------------------------------------------------------------------------------------------
# JSON Lines: one event per line, {"type": "order", "time": "...Z", ...}

_ENCODER = msgspec.json.Encoder()


def _to_record(event: Event, start: datetime) -> dict[str, Any]:
    record: dict[str, Any] = msgspec.to_builtins(event)
    record["time"] = _iso(start, record.pop("at"))
    return record


def write_jsonl(events: Iterable[Event], out: io.TextIOBase | Any, start: datetime) -> int:
    count = 0
    for event in events:
        out.write(_ENCODER.encode(_to_record(event, start)).decode() + "\n")
        count += 1
    return count


def read_jsonl(lines: Iterable[str], start: datetime) -> list[Event]:
    events: list[Event] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            record = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            raise EventLogError(f"{where}: not JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise EventLogError(f"{where}: expected a JSON object")
        events.append(_from_record(record, start, where))
    return _sorted(events)


def _from_record(record: dict[str, Any], start: datetime, where: str) -> Event:
    if "time" not in record:
        raise EventLogError(f"{where}.time: missing")
    record = dict(record)
    record["at"] = _seconds(start, str(record.pop("time")), where)
    try:
        event: Event = msgspec.convert(record, Event)
        return event
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$")
        raise EventLogError(f"{where}{path.rstrip('`')}: {message}") from exc


# ---------------------------------------------------------------------------------------------------------
# CSV: one row per sale, return, receipt or order line; consecutive rows with one order id form one order.

CSV_COLUMNS = (
    "time", "type", "id", "channel", "fulfillment", "region", "lat", "lon", "store", "tier",
    "sku", "qty", "order_id", "location", "restock",
)  # fmt: skip


def write_csv(events: Iterable[Event], out: io.TextIOBase | Any, start: datetime) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for event in events:
        count += 1
        time = _iso(start, event.at)
        if isinstance(event, Order):
            for line in event.lines:
                writer.writerow(
                    [time, "order", event.id, event.channel, event.fulfillment, event.region, repr(event.lat),
                     repr(event.lon), event.store or "", event.tier, line.sku, line.qty, "", "", ""]
                )  # fmt: skip
        elif isinstance(event, Sale):
            writer.writerow([time, "sale", event.id, event.channel, "", "", "", "", event.store, "", event.sku,
                             event.qty, "", "", ""])  # fmt: skip
        elif isinstance(event, Return):
            writer.writerow([time, "return", event.id, "", "", "", "", "", "", "", event.sku, event.qty,
                             event.order_id or "", event.location or "", "true" if event.restock else "false"])  # fmt: skip
        else:
            writer.writerow([time, "receipt", event.id, "", "", "", "", "", "", "", event.sku, event.qty, "",
                             event.location, ""])  # fmt: skip
    return count


def _required(row: dict[str, str], column: str, where: str) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise EventLogError(f"{where}.{column}: missing")
    return value


def _number(row: dict[str, str], column: str, where: str, kind: type[int] | type[float]) -> Any:
    text = _required(row, column, where)
    try:
        return kind(text)
    except ValueError as exc:
        raise EventLogError(f"{where}.{column}: {text!r} is not a {kind.__name__}") from exc


def read_csv(lines: Iterable[str], start: datetime) -> list[Event]:
    reader = csv.DictReader(lines)
    missing = [c for c in ("time", "type", "id", "sku", "qty") if c not in (reader.fieldnames or ())]
    if missing:
        raise EventLogError(f"header: missing column(s) {', '.join(missing)}")
    events: list[Event] = []
    pending: dict[str, Any] | None = None

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            events.append(Order(**{**pending, "lines": tuple(pending["lines"])}))
            pending = None

    for number, row in enumerate(reader, start=2):
        where = f"line {number}"
        kind = _required(row, "type", where)
        at = _seconds(start, _required(row, "time", where), where)
        event_id = _required(row, "id", where)
        sku = _required(row, "sku", where)
        qty = _number(row, "qty", where, int)
        if qty <= 0:
            raise EventLogError(f"{where}.qty: must be above 0")
        if kind != "order" or (pending is not None and pending["id"] != event_id):
            flush()
        if kind == "order":
            if pending is None:
                pending = {
                    "at": at, "id": event_id, "channel": _required(row, "channel", where),
                    "fulfillment": _required(row, "fulfillment", where), "region": _required(row, "region", where),
                    "lat": _number(row, "lat", where, float), "lon": _number(row, "lon", where, float),
                    "store": (row.get("store") or "").strip() or None,
                    "tier": (row.get("tier") or "").strip() or "standard", "lines": [],
                }  # fmt: skip
            pending["lines"].append(OrderLine(sku, qty))
        elif kind == "sale":
            channel = (row.get("channel") or "").strip() or "store_pos"
            events.append(Sale(at, event_id, channel, _required(row, "store", where), sku, qty))
        elif kind == "return":
            restock = (row.get("restock") or "true").strip().lower() not in ("false", "0", "no")
            order_id = (row.get("order_id") or "").strip() or None
            location = (row.get("location") or "").strip() or None
            if order_id is None and location is None:
                raise EventLogError(f"{where}: a return needs an order_id or a location")
            events.append(Return(at, event_id, sku, qty, order_id, location, restock))
        elif kind == "receipt":
            events.append(Receipt(at, event_id, _required(row, "location", where), sku, qty))
        else:
            raise EventLogError(f"{where}.type: {kind!r} is not one of order, sale, return, receipt")
    flush()
    return _sorted(events)


def _sorted(events: list[Event]) -> list[Event]:
    # Stable: events with the same second keep their order in the file.
    return sorted(events, key=lambda event: event.at)


# ---------------------------------------------------------------------------------------------------------


def write_events(events: Sequence[Event], path: str | Path, start: datetime) -> int:
    path = Path(path)
    with path.open("w", encoding="utf-8", newline="") as out:
        if path.suffix == ".csv":
            return write_csv(events, out, start)
        return write_jsonl(events, out, start)


def read_events(path: str | Path, start: datetime) -> list[Event]:
    path = Path(path)
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            if path.suffix == ".csv":
                return read_csv(handle, start)
            return read_jsonl(handle, start)
    except OSError as exc:
        raise EventLogError(f"cannot read {path}: {exc.strerror}") from exc
