"""Recorded event logs: JSON Lines and CSV, written and read back unchanged, bad lines named."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.events import Event, EventLogError, Order, read_events, write_events
from simulators.scenario import World


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_written_log_reads_back_as_the_same_events(
    tmp_path: Path, suffix: str, small_world: World, small_events: list[Event]
) -> None:
    path = tmp_path / f"events{suffix}"
    write_events(small_events, path, small_world.start)
    assert read_events(path, small_world.start) == small_events


def test_a_csv_order_spans_one_row_per_line(
    tmp_path: Path, small_world: World, small_events: list[Event]
) -> None:
    path = tmp_path / "events.csv"
    write_events(small_events, path, small_world.start)
    rows = path.read_text().splitlines()
    lines = sum(len(e.lines) if isinstance(e, Order) else 1 for e in small_events)
    assert len(rows) == 1 + lines


def test_jsonl_uses_iso_timestamps(tmp_path: Path, small_world: World, small_events: list[Event]) -> None:
    path = tmp_path / "events.jsonl"
    write_events(small_events[:1], path, small_world.start)
    assert '"time":"2026-11-20T' in path.read_text()


def test_a_jsonl_line_with_a_bad_field_is_named(tmp_path: Path, small_world: World) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"type":"receipt","time":"2026-11-20T01:00:00Z","id":"r1","location":"DC-1","sku":"MUG","qty":5}\n'
        '{"type":"receipt","time":"2026-11-20T02:00:00Z","id":"r2","location":"DC-1","sku":"MUG","qty":"x"}\n'
    )
    with pytest.raises(EventLogError, match=r'^line 2, qty: expected an integer, got "x"$'):
        read_events(path, small_world.start)


def test_a_csv_row_with_a_bad_timestamp_is_named(tmp_path: Path, small_world: World) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("time,type,id,sku,qty,location\nyesterday,receipt,r1,MUG,5,DC-1\n")
    with pytest.raises(
        EventLogError, match=r'^line 2, time: expected an ISO 8601 timestamp .*, got "yesterday"$'
    ):
        read_events(path, small_world.start)


def test_a_csv_return_needs_an_order_or_a_location(tmp_path: Path, small_world: World) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("time,type,id,sku,qty\n2026-11-20T03:00:00Z,return,x1,MUG,1\n")
    with pytest.raises(EventLogError, match="order_id or a location"):
        read_events(path, small_world.start)


def test_a_hand_written_csv_history_is_read_in_time_order(tmp_path: Path, small_world: World) -> None:
    path = tmp_path / "history.csv"
    path.write_text(
        "time,type,id,channel,fulfillment,region,lat,lon,store,sku,qty,location\n"
        "2026-11-20T09:00:00Z,order,A1,ecommerce,ship,north,52.5,13.3,,MUG,1,\n"
        "2026-11-20T09:00:00Z,order,A1,ecommerce,ship,north,52.5,13.3,,LAMP,2,\n"
        "2026-11-20T08:00:00Z,sale,S1,store_pos,,,,,N-001,MUG,1,\n"
    )
    events = read_events(path, small_world.start)
    assert [e.id for e in events] == ["S1", "A1"]
    order = events[1]
    assert isinstance(order, Order)
    assert [(line.sku, line.qty) for line in order.lines] == [("MUG", 1), ("LAMP", 2)]
    assert order.at == 9 * 3600
