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
from typing import Annotated, Any, Literal

import msgspec

from simulators.plain import ReadError, csv_records, explain, shown, text_lines

Qty = Annotated[int, msgspec.Meta(gt=0)]


class OrderLine(msgspec.Struct, frozen=True, gc=False):
    sku: str
    qty: Qty


class Order(msgspec.Struct, tag="order", tag_field="type", frozen=True, gc=False, forbid_unknown_fields=True):
    """A customer order from a non-POS channel; `store` is the pickup store for click-and-collect."""

    at: int
    id: str
    channel: str
    fulfillment: Literal["ship", "pickup", "ship_from_store"]
    region: str
    lat: float
    lon: float
    lines: tuple[OrderLine, ...]
    store: str | None = None
    tier: str = "standard"


class Sale(msgspec.Struct, tag="sale", tag_field="type", frozen=True, gc=False, forbid_unknown_fields=True):
    """A sale at a store till: the customer takes the units off the shelf."""

    at: int
    id: str
    channel: str
    store: str
    sku: str
    qty: Qty


class Return(
    msgspec.Struct, tag="return", tag_field="type", frozen=True, gc=False, forbid_unknown_fields=True
):
    """Units coming back; to `location`, or (when absent) to the location that fulfilled `order_id`."""

    at: int
    id: str
    sku: str
    qty: Qty
    order_id: str | None = None
    location: str | None = None
    restock: bool = True


class Receipt(
    msgspec.Struct, tag="receipt", tag_field="type", frozen=True, gc=False, forbid_unknown_fields=True
):
    """A delivery booked into a location's sellable stock."""

    at: int
    id: str
    location: str
    sku: str
    qty: Qty


Event = Order | Sale | Return | Receipt


class EventLogError(ReadError):
    """A recorded event log cannot be read; the message names the line and the field in plain words."""


FULFILLMENTS = ("ship", "pickup", "ship_from_store")
EVENT_TYPES = ("order", "sale", "return", "receipt")
_CHOICES = {"type": EVENT_TYPES, "fulfillment": FULFILLMENTS}


def _iso(start: datetime, at: int) -> str:
    return (start + timedelta(seconds=at)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(start: datetime, value: Any, line: int) -> int:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise EventLogError(
            line, "time", f"expected an ISO 8601 timestamp such as 2026-11-21T10:15:02Z, got {shown(value)}"
        ) from None
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


def read_jsonl(lines: Iterable[tuple[int, str]], start: datetime) -> list[Event]:
    """Events from numbered JSON Lines (see `simulators.plain.text_lines`)."""
    events: list[Event] = []
    for number, line in lines:
        if not line.strip():
            continue
        try:
            record = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            raise EventLogError(number, "", f"not valid JSON ({exc})") from None
        if not isinstance(record, dict):
            raise EventLogError(number, "", "expected a JSON object, one event per line")
        events.append(_from_record(record, start, number))
    return _sorted(events)


def _from_record(record: dict[str, Any], start: datetime, line: int) -> Event:
    if "time" not in record:
        raise EventLogError(line, "time", "missing")
    if "at" in record:
        raise EventLogError(line, "at", "not a known field (the time of an event is `time`)")
    record = dict(record)
    record["at"] = _seconds(start, record.pop("time"), line)
    try:
        event: Event = msgspec.convert(record, Event)
    except msgspec.ValidationError as exc:
        field, reason = explain(exc, record, _CHOICES)
        raise EventLogError(line, field, reason) from None
    _check(event, line)
    return event


def _check(event: Event, line: int) -> None:
    """What a record's schema cannot say: a pickup order names its store, a return where it goes."""
    if isinstance(event, Order):
        if not event.lines:
            raise EventLogError(line, "lines", "an order needs at least one line")
        if event.fulfillment == "pickup" and not event.store:
            raise EventLogError(line, "store", "a pickup order needs the pickup store")
    elif isinstance(event, Return) and event.order_id is None and event.location is None:
        raise EventLogError(line, "", "a return needs an order_id or a location")


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


def _required(row: dict[str, str], column: str, line: int, what: str = "") -> str:
    value = row.get(column)
    if not value:
        raise EventLogError(line, column, f"missing{what}")
    return value


def _int(row: dict[str, str], column: str, line: int) -> int:
    text = _required(row, column, line)
    try:
        value = int(text)
    except ValueError:
        raise EventLogError(line, column, f"expected an integer, got {shown(text)}") from None
    if value <= 0:
        raise EventLogError(line, column, f"must be 1 or more, got {value}")
    return value


def _float(row: dict[str, str], column: str, line: int, what: str) -> float:
    text = _required(row, column, line, what)
    try:
        return float(text)
    except ValueError:
        raise EventLogError(line, column, f"expected a number, got {shown(text)}") from None


def _restock(row: dict[str, str], line: int) -> bool:
    text = row.get("restock", "true").lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise EventLogError(line, "restock", f"expected true or false, got {shown(row['restock'])}")


def read_csv(records: Iterable[tuple[int, dict[str, str]]], start: datetime) -> list[Event]:
    """Events from numbered CSV records (see `simulators.plain.csv_records`)."""
    events: list[Event] = []
    pending: dict[str, Any] | None = None

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            events.append(Order(**{**pending, "lines": tuple(pending["lines"])}))
            pending = None

    for number, row in records:
        kind = _required(row, "type", number)
        if kind not in EVENT_TYPES:
            raise EventLogError(
                number, "type", f"expected one of {', '.join(EVENT_TYPES)}, got {shown(kind)}"
            )
        at = _seconds(start, _required(row, "time", number), number)
        event_id = _required(row, "id", number)
        sku = _required(row, "sku", number)
        qty = _int(row, "qty", number)
        if kind != "order" or (pending is not None and pending["id"] != event_id):
            flush()
        if kind == "order":
            if pending is None:
                fulfillment = _required(row, "fulfillment", number, " (an order needs it)")
                if fulfillment not in FULFILLMENTS:
                    raise EventLogError(
                        number,
                        "fulfillment",
                        f"expected one of {', '.join(FULFILLMENTS)}, got {shown(fulfillment)}",
                    )
                store = row.get("store")
                if fulfillment == "pickup" and not store:
                    raise EventLogError(number, "store", "a pickup order needs the pickup store")
                what = " (an order needs it)"
                pending = {
                    "at": at, "id": event_id, "channel": _required(row, "channel", number, what),
                    "fulfillment": fulfillment, "region": _required(row, "region", number, what),
                    "lat": _float(row, "lat", number, what), "lon": _float(row, "lon", number, what),
                    "store": store, "tier": row.get("tier", "standard"), "lines": [],
                }  # fmt: skip
            pending["lines"].append(OrderLine(sku, qty))
        elif kind == "sale":
            channel = row.get("channel", "store_pos")
            store = _required(row, "store", number, " (a till sale needs its store)")
            events.append(Sale(at, event_id, channel, store, sku, qty))
        elif kind == "return":
            order_id = row.get("order_id")
            location = row.get("location")
            if order_id is None and location is None:
                raise EventLogError(number, "", "a return needs an order_id or a location")
            events.append(Return(at, event_id, sku, qty, order_id, location, _restock(row, number)))
        else:
            location = _required(row, "location", number, " (a receipt needs it)")
            events.append(Receipt(at, event_id, location, sku, qty))
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
    """The events of a log (`.csv`, else JSON Lines) in time order; `EventLogError` names the bad line."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            return read_csv(csv_records(path, CSV_COLUMNS), start)
        return read_jsonl(text_lines(path), start)
    except EventLogError:
        raise
    except ReadError as exc:
        raise EventLogError(exc.line, exc.field, exc.reason) from None
    except OSError as exc:
        raise EventLogError(0, "", f"cannot read {path}: {exc.strerror}") from None
