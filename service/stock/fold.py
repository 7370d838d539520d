"""The journal folded into the state the Redis rebuild writes back, and that state's rows in SQL.

A `JournalFold` adds journal entries one by one: it sums the deltas per (sku, location), keeps every applied
event id with its SKU, every reservation's record and last journaled status, per (sku, location) the demand
rate of the sale with the highest sequence number, and the count, highest id and highest write number of
the entries. Adding is order-free (sums, maxima, a terminal status over "held"), so the entries of old days
can be folded first (`service.stock.checkpoint`) and the rest added afterwards with the same result as one
pass over the whole journal; `merge` adds a fold of newer entries to an older one.

Rows (`stock_checkpoint_items`, by kind and key): `level` "SKU<TAB>LOC" -> the five buckets, `rate`
"SKU<TAB>LOC" -> [rate text, at ms, seq], `event` event id -> SKU, `resv` reservation id -> [record or null,
status or null] (a commit can reach the journal before its reservation's entry: it keeps the status alone).
Reservation records and event ids are kept for good, as Redis keeps them; capacity days are not kept
apart, the rebuild counts them from the records.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, func, insert, select, tuple_, update

from service.db.models.stock import StockCheckpoint, StockCheckpointItem

HEADER = cast(Table, StockCheckpoint.__table__)
ITEMS = cast(Table, StockCheckpointItem.__table__)
FINISHED = {"commit": "committed", "release": "released"}  # entry kind -> the status it leaves
TERMINAL = tuple(FINISHED.values())
CHUNK = 5000
KEYS_PER_QUERY = 500

Position = tuple[str, str]


def _position(key: str) -> Position:
    sku, _, location = key.partition("\t")
    return sku, location


@dataclass
class JournalFold:
    levels: dict[Position, list[int]] = field(default_factory=dict)
    rates: dict[Position, list[Any]] = field(default_factory=dict)  # [rate text, at ms, seq]
    events: dict[str, str] = field(default_factory=dict)  # event id -> sku
    reservations: dict[str, list[Any]] = field(default_factory=dict)  # id -> [record | None, status | None]
    entries: int = 0
    last_id: int = 0
    writes: int = 0

    def add(self, entry: dict[str, Any]) -> None:
        """One journal row (id, kind, ref, deltas, record)."""
        self.entries += 1
        self.last_id = max(self.last_id, int(entry["id"]))
        record = entry["record"]
        if record:
            self.writes = max(self.writes, int(record.get("seq", 0)))
        for sku, location, *deltas in entry["deltas"]:
            position = self.levels.setdefault((sku, location), [0, 0, 0, 0, 0])
            for i, value in enumerate(deltas):
                position[i] += int(value)
        kind, ref = entry["kind"], entry["ref"]
        if kind == "event":
            self.events[ref] = record["sku"]
            if "demand" in record:
                location, rate, at_ms, seq = record["demand"]
                self._rate((record["sku"], location), [rate, at_ms, seq])
        elif kind == "reserve":
            held = self.reservations.setdefault(ref, [None, None])
            held[0] = record
            held[1] = held[1] or "held"
        elif kind in FINISHED:
            self.reservations.setdefault(ref, [None, None])[1] = FINISHED[kind]

    def _rate(self, position: Position, rate: list[Any]) -> None:
        kept = self.rates.get(position)
        if kept is None or int(rate[2]) > int(kept[2]):
            self.rates[position] = rate

    def merge(self, newer: JournalFold) -> None:
        """Add the entries `newer` folded (as if they came after this fold's)."""
        self.entries += newer.entries
        self.last_id = max(self.last_id, newer.last_id)
        self.writes = max(self.writes, newer.writes)
        for position, values in newer.levels.items():
            mine = self.levels.setdefault(position, [0, 0, 0, 0, 0])
            for i, value in enumerate(values):
                mine[i] += value
        for position, rate in newer.rates.items():
            self._rate(position, rate)
        self.events.update(newer.events)
        for rid, (record, status) in newer.reservations.items():
            mine = self.reservations.setdefault(rid, [None, None])
            mine[0] = record if record is not None else mine[0]
            mine[1] = status if status in TERMINAL else (mine[1] or status)

    def rows(self) -> Iterator[tuple[str, str, Any]]:
        """(kind, key, value) of every piece of this fold."""
        for (sku, location), values in self.levels.items():
            yield "level", f"{sku}\t{location}", values
        for (sku, location), rate in self.rates.items():
            yield "rate", f"{sku}\t{location}", rate
        for event_id, sku in self.events.items():
            yield "event", event_id, sku
        for rid, held in self.reservations.items():
            yield "resv", rid, held

    def take_row(self, kind: str, key: str, value: Any) -> None:
        """Put back one stored piece (`rows`) into this fold."""
        if kind == "level":
            self.levels[_position(key)] = [int(v) for v in value]
        elif kind == "rate":
            self.rates[_position(key)] = list(value)
        elif kind == "event":
            self.events[key] = str(value)
        elif kind == "resv":
            self.reservations[key] = list(value)


@dataclass(frozen=True)
class Header:
    generation: int
    entries: int
    last_id: int
    writes: int
    cutoff_ms: int


def read_header(conn: Connection) -> Header:
    row = conn.execute(
        select(
            HEADER.c.generation, HEADER.c.entries, HEADER.c.last_id, HEADER.c.writes, HEADER.c.cutoff_ms
        ).where(HEADER.c.id == 1)
    ).one()
    return Header(*(int(v) for v in row))


def load_all(conn: Connection) -> JournalFold:
    """The whole stored fold (with its header's counts)."""
    header = read_header(conn)
    fold = JournalFold(entries=header.entries, last_id=header.last_id, writes=header.writes)
    after: tuple[str, str] = ("", "")
    while True:
        rows = conn.execute(
            select(ITEMS.c.kind, ITEMS.c.key, ITEMS.c.value)
            .where(tuple_(ITEMS.c.kind, ITEMS.c.key) > tuple_(*after))
            .order_by(ITEMS.c.kind, ITEMS.c.key)
            .limit(CHUNK)
        ).all()
        for kind, key, value in rows:
            fold.take_row(kind, key, value)
        if len(rows) < CHUNK:
            return fold
        after = (rows[-1][0], rows[-1][1])


def _chunks(keys: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(keys), KEYS_PER_QUERY):
        yield keys[start : start + KEYS_PER_QUERY]


def save_merged(conn: Connection, newer: JournalFold, cutoff_ms: int, made_at_ms: int) -> None:
    """Merge `newer` into the stored fold, in the caller's transaction: the stored pieces of the keys it
    touches are read, merged and written back (an event id already kept stays as it is), the header takes
    its counts."""
    by_kind: dict[str, list[str]] = {}
    for kind, key, _ in newer.rows():
        by_kind.setdefault(kind, []).append(key)
    stored, found = JournalFold(), set[tuple[str, str]]()
    for kind, wanted in by_kind.items():
        for keys in _chunks(wanted):
            for key, value in conn.execute(
                select(ITEMS.c.key, ITEMS.c.value).where(ITEMS.c.kind == kind, ITEMS.c.key.in_(keys))
            ):
                stored.take_row(kind, key, value)
                found.add((kind, key))
    stored.merge(newer)
    changed: list[dict[str, Any]] = []
    added: list[dict[str, Any]] = []
    for kind, key, value in stored.rows():
        if (kind, key) not in found:
            added.append({"kind": kind, "key": key, "value": value})
        elif kind != "event":
            changed.append({"k": kind, "n": key, "value": value})
    for start in range(0, len(changed), CHUNK):
        conn.execute(
            update(ITEMS).where(ITEMS.c.kind == bindparam("k"), ITEMS.c.key == bindparam("n")),
            changed[start : start + CHUNK],
        )
    for start in range(0, len(added), CHUNK):
        conn.execute(insert(ITEMS), added[start : start + CHUNK])
    conn.execute(
        update(HEADER)
        .where(HEADER.c.id == 1)
        .values(
            entries=HEADER.c.entries + newer.entries,
            last_id=_greatest(conn, HEADER.c.last_id, newer.last_id),
            writes=_greatest(conn, HEADER.c.writes, newer.writes),
            cutoff_ms=_greatest(conn, HEADER.c.cutoff_ms, cutoff_ms),
            made_at_ms=made_at_ms,
        )
    )


def _greatest(conn: Connection, column: Any, value: int) -> Any:
    # SQLite's two-argument max() is PostgreSQL's greatest()
    return func.greatest(column, value) if conn.dialect.name == "postgresql" else func.max(column, value)
