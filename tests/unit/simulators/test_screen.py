"""Nothing silently dropped: every skipped event counted by type and reason, a log that skips too much or
replays nothing refused with the reason, and every bad line of a log named in plain words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simulators.events import Event, EventLogError, Order, OrderLine, Receipt, Return, Sale, read_events
from simulators.kpis import run_kpis
from simulators.runner import Run
from simulators.scenario import World
from simulators.screen import Screened, TooManySkipped, check_share, load_stream, screen
from simulators.versions import VersionSet, resolve

HOUR = 3600


def _order(
    at: int, oid: str, channel: str = "ecommerce", skus: tuple[str, ...] = ("MUG",), **kw: Any
) -> Order:
    fields: dict[str, Any] = {"fulfillment": "ship", "store": None} | kw
    lines = tuple(OrderLine(sku, 1) for sku in skus)
    return Order(at, oid, channel, fields["fulfillment"], "north", 52.5, 13.3, lines, fields["store"])  # type: ignore[arg-type]


def test_each_reason_is_counted_under_its_event_type(small_world: World) -> None:
    events: list[Event] = [
        _order(HOUR, "O1"),  # replays
        _order(HOUR, "O2", channel="phone"),  # bad channel: unknown
        _order(HOUR, "O3", channel="store_pos"),  # bad channel: a till channel cannot take an order
        _order(HOUR, "O4", fulfillment="pickup", store="N-999"),  # unknown pickup store
        _order(HOUR, "O5", skus=("GIFTCARD",)),  # every line unknown: the order is skipped
        _order(HOUR, "O6", skus=("MUG", "GIFTCARD", "VOUCHER")),  # two lines left out, the order replays
        _order(-HOUR, "O7"),  # before the start
        _order(48 * HOUR, "O8"),  # at the end of the horizon
        Sale(HOUR, "S1", "store_pos", "N-001", "MUG", 1),  # replays
        Sale(HOUR, "S2", "ecommerce", "N-001", "MUG", 1),  # bad channel: an online channel at a till
        Sale(HOUR, "S3", "kiosk", "N-001", "MUG", 1),  # bad channel: unknown
        Sale(HOUR, "S4", "store_pos", "N-999", "MUG", 1),
        Sale(HOUR, "S5", "store_pos", "N-001", "GIFTCARD", 1),
        Sale(50 * HOUR, "S6", "store_pos", "N-001", "MUG", 1),
        Return(2 * HOUR, "R1", "MUG", 1, order_id="O1"),  # replays
        Return(2 * HOUR, "R2", "MUG", 1, order_id="O-OLD"),  # its order is not in the log
        Return(2 * HOUR, "R3", "MUG", 1, order_id="O2"),  # its order was skipped
        Return(2 * HOUR, "R4", "MUG", 1, location="N-999"),
        Return(2 * HOUR, "R5", "GIFTCARD", 1, location="N-001"),
        Receipt(HOUR, "I1", "DC-1", "MUG", 5),  # replays
        Receipt(HOUR, "I2", "DC-9", "MUG", 5),
        Receipt(HOUR, "I3", "DC-1", "GIFTCARD", 5),
        Receipt(-1, "I4", "DC-1", "MUG", 5),
    ]
    screened = screen(small_world, events)
    assert [e.id for e in screened.events] == ["O1", "O6", "S1", "R1", "I1"]
    order6 = screened.events[1]
    assert isinstance(order6, Order) and [line.sku for line in order6.lines] == ["MUG"]
    assert screened.skipped == {
        "order": {"bad_channel": 2, "outside_horizon": 2, "unknown_location": 1, "unknown_sku": 1},
        "order_line": {"unknown_sku": 2},
        "receipt": {"outside_horizon": 1, "unknown_location": 1, "unknown_sku": 1},
        "return": {"unknown_location": 1, "unknown_order": 2, "unknown_sku": 1},
        "sale": {"bad_channel": 2, "outside_horizon": 1, "unknown_location": 1, "unknown_sku": 1},
    }
    assert (screened.read, screened.skipped_events) == (23, 18)


def test_a_run_counts_what_only_it_can_see_next_to_the_screened_skips(small_world: World) -> None:
    events: list[Event] = [
        Sale(HOUR, "S1", "store_pos", "N-001", "LAMP", 99),  # takes the shelf's 4 lamps
        Sale(2 * HOUR, "S2", "store_pos", "N-001", "LAMP", 1),  # finds none: nothing is sold
        Return(3 * HOUR, "R2", "LAMP", 1, order_id="S2"),  # so nothing of it can come back
        _order(HOUR, "O1", skus=("MUG", "GIFTCARD")),
    ]
    screened = screen(small_world, events)
    assert len(screened.events) == 4
    policies = resolve([], VersionSet("defaults", {}))[0].policy_set("python")
    result = Run(small_world, policies).run(screened.events)
    kpis = run_kpis(result, screened.skipped)
    assert kpis["events_skipped"] == {"order_line": {"unknown_sku": 1}, "return": {"not_sent": 1}}


def _screened(small_world: World, kept: int, skipped: int) -> Screened:
    events: list[Event] = [Sale(HOUR, f"S{n}", "store_pos", "N-001", "MUG", 1) for n in range(kept)]
    events += [Sale(HOUR, f"X{n}", "store_pos", "N-999", "MUG", 1) for n in range(skipped)]
    return screen(small_world, events)


def test_a_log_within_the_allowed_share_passes(small_world: World) -> None:
    check_share(_screened(small_world, 99, 1), small_world, "log.csv", 0.01)
    check_share(_screened(small_world, 90, 10), small_world, "log.csv", 0.10)


def test_a_log_that_skips_more_than_the_allowed_share_is_refused(small_world: World) -> None:
    with pytest.raises(TooManySkipped) as error:
        check_share(_screened(small_world, 98, 2), small_world, "log.csv", 0.01)
    assert str(error.value) == (
        "2 of the 100 events of log.csv (2 %) would be skipped, more than the allowed 1 % (scenario field "
        "max_skipped_share, option --max-skipped): till sales: 2 unknown location"
    )


def test_a_log_outside_the_horizon_is_refused_saying_so(small_world: World) -> None:
    year_early = -365 * 24 * HOUR
    events: list[Event] = [
        Sale(year_early + n * HOUR, f"S{n}", "store_pos", "N-001", "MUG", 1) for n in range(5)
    ]
    with pytest.raises(TooManySkipped) as error:
        check_share(screen(small_world, events), small_world, "log.csv", 0.01)
    assert str(error.value) == (
        "none of the 5 events of log.csv falls within the scenario's horizon, 2026-11-20 00:00 UTC to "
        "2026-11-22 00:00 UTC (its start and duration_hours); the log runs from 2025-11-20 00:00 UTC to "
        "2025-11-20 04:00 UTC. Check the scenario's start"
    )


def test_a_log_that_replays_nothing_is_refused_even_when_allowed_to_skip_all(small_world: World) -> None:
    with pytest.raises(
        TooManySkipped, match=r"none of the 3 events of log\.csv can be replayed: till sales: 3"
    ):
        check_share(_screened(small_world, 0, 3), small_world, "log.csv", 1.0)
    with pytest.raises(TooManySkipped, match=r"log\.csv holds no events"):
        check_share(screen(small_world, []), small_world, "log.csv", 1.0)


def test_the_scenario_sets_the_allowed_share_and_the_option_overrides_it(
    small_world: World, tmp_path: Path
) -> None:
    log = tmp_path / "log.csv"
    log.write_text(
        "time,type,id,channel,store,sku,qty\n"
        + "".join(f"2026-11-20T10:00:00Z,sale,S{n},store_pos,N-001,MUG,1\n" for n in range(19))
        + "2026-11-20T10:00:00Z,sale,X,store_pos,N-999,MUG,1\n"
    )
    with pytest.raises(TooManySkipped):
        load_stream(small_world, str(log))
    assert load_stream(small_world, str(log), 0.05)[0].skipped_events == 1
    small_world.scenario.max_skipped_share = 0.05
    try:
        assert load_stream(small_world, str(log))[1] == "log.csv"
    finally:
        small_world.scenario.max_skipped_share = 0.01


# ---------------------------------------------------------------------------------------------------------
# Read errors in plain words

CSV_HEAD = "time,type,id,channel,fulfillment,region,lat,lon,store,sku,qty,order_id,location,restock\n"
GOOD_SALE = "2026-11-20T10:00:00Z,sale,S1,store_pos,,,,,N-001,MUG,1,,,\n"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2026-11-20T10:00:00Z,sale,S2,store_pos,,,,,N-001,MUG,two,,,", 'line 3, qty: expected an integer, got "two"'),
        ("2026-11-20T10:00:00Z,sale,S2,store_pos,,,,,N-001,MUG,0,,,", "line 3, qty: must be 1 or more, got 0"),
        ("2026-11-20T10:00:00Z,sale,S2,store_pos,,,,,N-001,,1,,,", "line 3, sku: missing"),
        ("2026-11-20T10:00:00Z,sale,S2,store_pos,,,,,,MUG,1,,,", "line 3, store: missing (a till sale needs its store)"),
        ("20/11/2026 10:00,sale,S2,store_pos,,,,,N-001,MUG,1,,,",
         'line 3, time: expected an ISO 8601 timestamp such as 2026-11-21T10:15:02Z, got "20/11/2026 10:00"'),
        ("2026-11-20T10:00:00Z,refund,S2,store_pos,,,,,N-001,MUG,1,,,",
         'line 3, type: expected one of order, sale, return, receipt, got "refund"'),
        ("2026-11-20T10:00:00Z,order,O1,ecommerce,delivery,north,52.5,13.3,,MUG,1,,,",
         'line 3, fulfillment: expected one of ship, pickup, ship_from_store, got "delivery"'),
        ("2026-11-20T10:00:00Z,order,O1,ecommerce,ship,north,north,13.3,,MUG,1,,,",
         'line 3, lat: expected a number, got "north"'),
        ("2026-11-20T10:00:00Z,order,O1,ecommerce,pickup,north,52.5,13.3,,MUG,1,,,",
         "line 3, store: a pickup order needs the pickup store"),
        ("2026-11-20T10:00:00Z,return,R1,,,,,,,MUG,1,,,maybe", "line 3: a return needs an order_id or a location"),
        ("2026-11-20T10:00:00Z,return,R1,,,,,,,MUG,1,,N-001,maybe", 'line 3, restock: expected true or false, got "maybe"'),
        ("2026-11-20T10:00:00Z,receipt,I1,,,,,,,MUG,4,,,", "line 3, location: missing (a receipt needs it)"),
        ('2026-11-20T10:00:00Z,sale,S2,store_pos,,,,,N-001,MUG,1,,,,extra', "line 3: 15 cells, but the header names 14 columns"),
    ],
)  # fmt: skip
def test_a_bad_csv_row_is_named_by_line_and_field(
    small_world: World, tmp_path: Path, row: str, message: str
) -> None:
    path = tmp_path / "log.csv"
    path.write_text(CSV_HEAD + GOOD_SALE + row + "\n")
    with pytest.raises(EventLogError) as error:
        read_events(path, small_world.start)
    assert str(error.value) == message


def test_an_unknown_csv_column_is_named(small_world: World, tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("time,type,id,store,sku,quantity\n")
    with pytest.raises(
        EventLogError, match=r"^line 1, quantity: not a known column; the columns are time, type"
    ):
        read_events(path, small_world.start)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"type":"sale","time":"2026-11-20T10:00:00Z","id":"S2","channel":"store_pos","store":"N-001","sku":"MUG","qty":"two"}',
         'line 2, qty: expected an integer, got "two"'),
        ('{"type":"sale","time":"2026-11-20T10:00:00Z","id":"S2","channel":"store_pos","store":"N-001","sku":"MUG","qty":-1}',
         "line 2, qty: must be 1 or more, got -1"),
        ('{"type":"sale","time":"2026-11-20T10:00:00Z","id":"S2","channel":"store_pos","sku":"MUG","qty":1}',
         "line 2, store: missing"),
        ('{"type":"refund","time":"2026-11-20T10:00:00Z","id":"S2"}',
         'line 2, type: expected one of order, sale, return, receipt, got "refund"'),
        ('{"type":"sale","id":"S2","channel":"store_pos","store":"N-001","sku":"MUG","qty":1}', "line 2, time: missing"),
        ('{"type":"order","time":"2026-11-20T10:00:00Z","id":"O1","channel":"ecommerce","fulfillment":"ship",'
         '"region":"north","lat":52.5,"lon":13.3,"lines":[{"sku":"MUG","qty":"1"}]}',
         'line 2, lines[0].qty: expected an integer, got "1"'),
        ('{"type":"sale","time":"2026-11-20T10:00:00Z","id":"S2","channel":"store_pos","store":"N-001","sku":"MUG","qty":1,"price":3}',
         "line 2, price: not a known field"),
        ('{"type":"sale", "time": 2026-11-20}', "line 2: not valid JSON"),
        ("[1, 2]", "line 2: expected a JSON object, one event per line"),
    ],
)  # fmt: skip
def test_a_bad_jsonl_line_is_named_by_line_and_field(
    small_world: World, tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "log.jsonl"
    good = '{"type":"sale","time":"2026-11-20T10:00:00Z","id":"S1","channel":"store_pos","store":"N-001","sku":"MUG","qty":1}'
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(EventLogError) as error:
        read_events(path, small_world.start)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_invalid_utf8_is_named_by_its_line(small_world: World, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"log{suffix}"
    if suffix == ".csv":
        text = (
            CSV_HEAD + GOOD_SALE
        ).encode() + b"2026-11-20T10:00:00Z,sale,S2,store_pos,,,,,N-0\xe9,MUG,1,,,\n"
    else:
        good = b'{"type":"sale","time":"2026-11-20T10:00:00Z","id":"S1","channel":"store_pos","store":"N-001","sku":"MUG","qty":1}\n'
        text = good + good.replace(b"N-001", b"N-\xff01")
    path.write_bytes(text)
    with pytest.raises(EventLogError) as error:
        read_events(path, small_world.start)
    line = 3 if suffix == ".csv" else 2
    assert str(error.value).startswith(f"line {line}: not UTF-8 text (byte 0x")
    assert str(error.value).endswith("; save the file as UTF-8")


def test_a_byte_order_mark_is_not_part_of_the_header(small_world: World, tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (CSV_HEAD + GOOD_SALE).encode())
    assert [e.id for e in read_events(path, small_world.start)] == ["S1"]
