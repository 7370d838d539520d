"""Rebuild the Redis stock state from the SQL journal after the Redis data was lost.

Every acknowledged change is in the journal as signed deltas, so summing them gives the levels Redis
had; capacity usage per business day comes back from the reservations' claims (held and committed ones);
reservations come back with their last journaled status (held ones with their expiry index, or
expired if their time has passed meanwhile), and applied event ids come back so that a re-sent event
stays a duplicate. Each sale's entry carries the demand rate it left (exact text), its time and its
sequence number per (sku, location); the entry with the highest sequence number is the state Redis had,
whatever order concurrent requests reached the journal in.

The journal days that its retention took away are folded into the checkpoint (`service.stock.checkpoint`):
the rebuild starts from it and adds the entries left (`service.stock.fold`), which gives what a pass over
the whole journal would.

The state marker (`Keys.built`) is not written by `replay_journal`: `service.stock.recovery` runs it with
the marker missing (every stock script then refuses, so no request changes Redis meanwhile) and under its
lock, and writes the marker, the journal position read, once the state is in place.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.typing import EncodableT, FieldT

from service.stock.checkpoint import read_state
from service.stock.redis import RedisStockStore
from service.stock.redis_layout import capacity_keep_ms, to_ms

BUCKET_FIELDS = ("s", "r", "d", "p", "t")


@dataclass(frozen=True)
class RebuildReport:
    journal_entries: int  # entries read from the journal
    checkpoint_entries: int  # entries the journal checkpoint had folded (see `service.stock.checkpoint`)
    generation: int  # the checkpoint's generation read
    journal_position: int  # the id of the last entry read (0 for an empty journal)
    writes: int  # the highest write number an entry records (the marker's counter starts from it)
    positions: int
    reservations_held: int
    reservations_total: int
    events: int


async def replay_journal(
    store: RedisStockStore, now: datetime | None = None, fence: Callable[[], None] | None = None
) -> RebuildReport:
    """Wipe this store's Redis keys and write back the state the journal describes (not the marker).

    `fence` is called before every write to Redis and raises to stop the rebuild (its lock was lost)."""
    state = await read_state(store.journal.engine)
    fold = state.fold
    levels = fold.levels
    rates = fold.rates
    events: dict[str, list[str]] = defaultdict(list)
    for event_id, sku in fold.events.items():
        events[sku].append(event_id)
    records: dict[str, dict[str, Any]] = {}
    status: dict[str, str] = {}
    for rid, (record, last) in fold.reservations.items():
        if record is not None:  # a reservation whose entry is not in the journal yet is left out
            records[rid], status[rid] = record, last

    now_ms = to_ms(now or store.now())
    # (day, location) -> units counted against its daily capacity: held and committed claims
    capacity: dict[tuple[str, str], int] = defaultdict(int)
    for rid, record in records.items():
        if status[rid] == "held" and int(record["exp"]) <= now_ms:
            status[rid] = "expired"
            for sku, location, qty in record["lines"]:
                levels.setdefault((sku, location), [0, 0, 0, 0, 0])[1] -= int(qty)
        if "cap" in record and status[rid] in ("held", "committed"):
            day, taken = record["cap"]
            for location, qty in taken:
                capacity[(day, location)] += int(qty)

    keys = store.keys
    if fence is not None:
        fence()
    await store.wipe()
    pipe = store.client.pipeline(transaction=False)
    pending = 0

    async def flush(force: bool = False) -> None:
        nonlocal pipe, pending
        if pending and (force or pending >= 1000):
            if fence is not None:
                fence()
            await pipe.execute()
            pipe = store.client.pipeline(transaction=False)
            pending = 0

    for (sku, location), values in levels.items():
        pipe.hset(
            keys.stock(sku),
            mapping={f"{b}:{location}": v for b, v in zip(BUCKET_FIELDS, values, strict=True)},
        )
        # the availability summary: sellable - reserved, as the scripts keep it
        pipe.hset(keys.avail(sku), location, values[0] - values[1])
        pending += 2
        await flush()
    for (sku, location), (rate, at_ms, seq) in rates.items():
        pipe.hset(
            keys.stock(sku), mapping={f"e:{location}": rate, f"u:{location}": at_ms, f"n:{location}": seq}
        )
        pending += 1
        await flush()
    for sku, ids in events.items():
        for start in range(0, len(ids), 1000):
            pipe.sadd(keys.events_at(keys.tag(sku)), *ids[start : start + 1000])
            pending += 1
            await flush()
        if store.cluster:
            for event_id in ids:
                pipe.set(keys.event_id(event_id), sku)
                pending += 1
                await flush()
    days: set[str] = set()
    for (day, location), used in capacity.items():
        pipe.hset(keys.capacity(day)[0], f"r:{location}", used)
        days.add(day)
        pending += 1
        await flush()
    held = 0
    for rid, record in records.items():
        lines = record["lines"]
        mapping: dict[FieldT, EncodableT] = {
            "id": rid,
            "order_id": record["order_id"],
            "channel": record["channel"],
            "key": record["key"],
            "fp": record["fp"],
            "exp": record["exp"],
            "created": record["created"],
            "status": status[rid],
            "lines": "".join(f"{sku}\t{loc}\t{qty}\n" for sku, loc, qty in lines),
        }
        claim = record.get("cap")
        if claim is not None:
            day, taken = claim
            mapping["cday"] = day
            mapping["cap"] = "".join(f"{loc}\t{qty}\n" for loc, qty in taken)
        pipe.hset(keys.reservation(rid), mapping=mapping)
        pending += 1
        if store.cluster:
            pipe.set(keys.idempotency(rid), record["fp"])
            pending += 1
        if claim is not None and status[rid] == "held":
            _, hold, part = keys.capacity(claim[0])
            pipe.hset(part, rid, mapping["cap"])
            pipe.zadd(hold, {rid: int(record["exp"])})
            days.add(claim[0])
            pending += 2
        if status[rid] == "held":
            held += 1
            parts: dict[str, str] = defaultdict(str)
            for sku, location, qty in lines:
                parts[sku] += f"{location}\t{qty}\n"
            for sku, encoded in parts.items():
                pipe.hset(keys.part(sku), rid, encoded)
                pipe.zadd(keys.hold(sku), {rid: int(record["exp"])})
                pending += 2
            pipe.zadd(keys.holds_at(keys.home(rid) or ""), {rid: int(record["exp"])})
            pending += 1
        await flush()
    for day in days:
        for key in keys.capacity(day):
            pipe.pexpire(key, capacity_keep_ms(day, now_ms))
            pending += 1
        await flush()
    await flush(force=True)
    return RebuildReport(
        state.journal_entries,
        state.checkpoint_entries,
        state.generation,
        fold.last_id,
        fold.writes,
        len(levels),
        held,
        len(records),
        len(fold.events),
    )
