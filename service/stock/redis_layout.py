"""The Redis stock store's key names, scripts and reply parsing (the layout `service.stock.redis` documents)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, NamedTuple

import hiredis
import msgspec

import service.stock.ledger as ledger
from service.stock.cluster import SlotTags
from service.stock.store import Levels, Reservation, ReservedLine

# The version of the key layout the scripts keep, written in the state marker (`layout`) by the rebuild:
# a marker without it, or with another, describes state these scripts cannot use (see `check_behind`).
LAYOUT = "3"


def _script(name: str) -> str:
    folder = resources.files("service.stock") / "lua"
    return (folder / "prelude.lua").read_text() + "\n" + (folder / f"{name}.lua").read_text()


class Script:
    """One of the store's Lua scripts: its text and the SHA1 Redis caches it under."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.text = _script(name)
        self.sha = hashlib.sha1(self.text.encode()).hexdigest()


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def reservation_id(idempotency_key: str) -> str:
    """The id follows from the key, so a retried request finds its reservation in the same script."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# the levels script's answer: per requested SKU, location -> its five buckets (decoded in one C call)
LEVELS_DECODER = msgspec.json.Decoder(list[dict[str, tuple[int, int, int, int, int]]])


# the available script's answer: per requested SKU, location -> available units
AVAILABLE_DECODER = msgspec.json.Decoder(list[dict[str, int]])


def levels_by_location(rows: dict[str, tuple[int, int, int, int, int]]) -> dict[str, Levels]:
    """One SKU's decoded rows -> location -> Levels, locations in order (as every backend answers)."""
    return {loc: Levels(*buckets) for loc, buckets in sorted(rows.items())}


def capacity_keep_ms(day: str, now_ms: int) -> int:
    """How long a capacity day's keys are kept from now: until the last reservation counted on that day
    could have expired (relative, so that Redis's clock need not agree with the service's)."""
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return max(1, to_ms(start + timedelta(days=2, seconds=ledger.MAX_TTL_SECONDS)) - now_ms)


def parse_lines(encoded: str) -> tuple[ReservedLine, ...]:
    lines = []
    for row in encoded.splitlines():
        if row:
            sku, loc, qty = row.split("\t")
            lines.append(ReservedLine(sku, loc, int(qty)))
    return tuple(lines)


def parse_reservation(flat: Sequence[Any], now_ms: int) -> Reservation:
    fields = {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat), 2)}
    status = fields["status"]
    expires_ms = int(fields["exp"])
    if status == "held" and expires_ms <= now_ms:
        status = "expired"
    return Reservation(
        id=fields["id"],
        order_id=fields["order_id"],
        channel=fields["channel"],
        idempotency_key=fields["key"],
        lines=parse_lines(fields["lines"]),
        status=status,  # type: ignore[arg-type]
        expires_at=from_ms(expires_ms),
        created_at=from_ms(int(fields["created"])),
    )


class ReadKeys(NamedTuple):
    """What an availability read of one list of SKUs needs: the distinct SKUs in order, their keys as the
    scripts list them, and the ready-answer read (EXISTS of the state marker, MGET of every SKU's
    `avail:{SKU}:ready`) packed once."""

    unique: tuple[str, ...]
    keys: tuple[str, ...]
    ready: tuple[bytes, bytes]


class Keys:
    """Key names; `tags` set on a Redis Cluster (see `service.stock.cluster`), where the keys that are not
    per SKU exist once per slot. On one node every `tag` is "" and names are those of the docstring."""

    def __init__(self, prefix: str, tags: SlotTags | None = None) -> None:
        self.prefix = prefix
        self.tags = tags
        self.holds = f"{prefix}holds"
        self._sku_keys: dict[str, tuple[str, str, str, str]] = {}
        self._read_keys: dict[tuple[str, ...], ReadKeys] = {}

    def stock(self, sku: str) -> str:
        return f"{self.prefix}stock:{{{sku}}}"

    def hold(self, sku: str) -> str:
        return f"{self.prefix}hold:{{{sku}}}"

    def part(self, sku: str) -> str:
        return f"{self.prefix}part:{{{sku}}}"

    def avail(self, sku: str) -> str:
        return f"{self.prefix}avail:{{{sku}}}"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def built(self) -> str:
        return f"{self.prefix}built"

    @property
    def rebuilding(self) -> str:
        return f"{self.prefix}rebuilding"

    def tag(self, sku: str) -> str:
        """The slot tag of the SKU's keys on a cluster; "" on one node."""
        return "" if self.tags is None else self.tags.of_sku(sku)

    def by_slot(self, skus: Sequence[str]) -> dict[str, list[str]]:
        """The SKUs (distinct, in order) grouped by their slot tag."""
        groups: dict[str, list[str]] = {}
        for sku in dict.fromkeys(skus):
            groups.setdefault(self.tag(sku), []).append(sku)
        return groups

    def built_at(self, tag: str) -> str:
        return f"{self.prefix}built:{{{tag}}}" if tag else self.built

    def events_at(self, tag: str) -> str:
        return f"{self.prefix}events:{{{tag}}}" if tag else self.events

    def holds_at(self, tag: str) -> str:
        return f"{self.prefix}holds:{{{tag}}}" if tag else self.holds

    def home(self, rid: str) -> str | None:
        """The slot tag a reservation id names ("" on one node); None for an id no reservation can have."""
        if self.tags is None:
            return ""
        tag = rid.rpartition("-")[2]
        return tag if "-" in rid and self.tags.valid(tag) else None

    def reservation(self, rid: str) -> str:
        if self.tags is None:
            return f"{self.prefix}resv:{rid}"
        hexpart, _, tag = rid.rpartition("-")
        return f"{self.prefix}resv:{{{tag}}}:{hexpart}"

    def fence(self, tag: str) -> str:
        """A slot's fence of compensated cross-slot attempts (see `service.stock.crossslot`)."""
        return f"{self.prefix}fence:{{{tag}}}"

    def day_tag(self, day: str) -> str:
        """The slot tag of a capacity day's keys (`{DAY}`) on a cluster; "" on one node."""
        return "" if self.tags is None else self.tags.of_sku(day)

    def event_id(self, event_id: str) -> str:
        return f"{self.prefix}eid:{{{event_id}}}"

    def idempotency(self, rid: str) -> str:
        return f"{self.prefix}idem:{{{rid.partition('-')[0]}}}"

    def ready(self, sku: str) -> str:
        """The SKU's ready availability answer (written by the available script, dropped by every change)."""
        return f"{self.avail(sku)}:ready"

    def read_keys(self, skus: Sequence[str]) -> ReadKeys:
        """What a read of these SKUs needs, kept per list of SKUs: the same SKU lists come back request
        after request."""
        key = tuple(skus)
        found = self._read_keys.get(key)
        if found is None:
            if len(self._read_keys) > 10_000:
                self._read_keys.clear()
            unique = tuple(dict.fromkeys(skus))
            exists: tuple[Any, ...] = ("EXISTS", self.built)
            mget: tuple[Any, ...] = ("MGET", *(self.ready(sku) for sku in unique))
            ready = (hiredis.pack_command(exists), hiredis.pack_command(mget))
            keys = tuple(k for sku in unique for k in self.sku_keys(sku))
            found = self._read_keys[key] = ReadKeys(unique, keys, ready)
        return found

    def capacity(self, day: str) -> list[str]:
        return [
            f"{self.prefix}capu:{{{day}}}",
            f"{self.prefix}caph:{{{day}}}",
            f"{self.prefix}capp:{{{day}}}",
        ]

    def sku_keys(self, sku: str) -> list[str]:
        """The SKU's keys as every script lists them: stock, hold, part, avail."""
        found = self._sku_keys.get(sku)
        if found is None:
            if len(self._sku_keys) > 100_000:
                self._sku_keys.clear()
            found = self._sku_keys[sku] = (self.stock(sku), self.hold(sku), self.part(sku), self.avail(sku))
        return list(found)
