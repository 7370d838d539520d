"""Orders and finishes a Redis Cluster takes in steps on several slots, under an intent in the journal.

A reservation whose SKUs live on more than one slot, or that counts against a day's capacity (whose keys
`capu:{DAY}`... live in the day's slot), cannot be one script. It is taken so:

1. **Intent.** A row in `stock_intents` (`service.stock.intents`), committed before Redis is touched: the
   reservation id, its slots and SKUs, its capacity day, its expiry. One intent per reservation at a
   time; its owner holds a lease (`LEASE_MS`).
2. **Capacity step** (when the order counts against a day): one script on the day's slot takes, per
   listed location, min(what the order's lines there ask, what the limit leaves) as the order's
   *budget*, recorded as the reservation's capacity part (the same hold/part shape as a SKU's, so it
   expires with the reservation).
3. **SKU steps**: one script per slot, in slot order (the same for every order, so that concurrent orders
   on common SKUs contend on the first one they share rather than each holding a different one), each
   atomic on its slot: it checks and takes its lines (all of them or none unless partial grants are
   allowed) within the remaining budget. Where the budget can bind (a partial grant, or less capacity
   left than the lines ask) the steps follow line order instead, one per run of consecutive SKUs on one
   slot, so lines meet the budget as on one node. Once a line is short in an all-or-nothing order (or
   the budget is short from the start), the remaining steps only check (for the short lines' figures)
   and take nothing.
4. **Compensation**: on a short order, an idempotency conflict or any failure (a node away, the state
   lost), one `undo` script per slot gives back every part this attempt took there (the capacity part
   too) and fences the attempt on that slot, before the answer.
5. **Trim, seal, close**: the capacity part keeps only what the lines took; the reservation's record is
   written on its home slot (`seal`, with the attempt's id); then one transaction deletes the intent and
   writes the journal entry, only while the lease is still the owner's.

A commit or release of such a reservation is an intent too: a commit first *pins* the parts on the other
slots (their expiry score becomes +inf, so that no prune releases them between the decision and their
commit), the home slot's script decides (`finish`: the status, with the home slot's parts, marked with the
attempt), the other slots' parts and the capacity part follow (`apply`), and the intent closes with the
journal entry.

**Recovery** (`recover_due`, at start-up and with every expiry sweep, on every worker): an intent whose
lease lapsed is taken over by one worker (a compare-and-set of its lease) and resolved. The home slot is
the decision point, read and fenced in one script: an order whose record this attempt sealed is whole and
is completed (journaled); any other is compensated on every slot. A finish the home slot decided for this
attempt is rolled forward (its other parts applied, journaled); otherwise its pins are undone. Fences make
this safe against a worker that only stalled: a step, seal or decision of a fenced attempt is refused, and
compensating twice does nothing. A capacity claim therefore never outlives its stock (both are parts of
one attempt, compensated together, or both sealed) and stock never outlives its claim.

`STOCK_TEST_KILL_AFTER_STEP` (a test hook, inert unless set): the number of SKU steps after which the
process kills itself with SIGKILL, for the fault test that stops a worker between the steps of an order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from redis.crc import key_slot

import service.stock.ledger as ledger
from service.stock.intents import Intent, Intents
from service.stock.journal import Entry
from service.stock.redis_layout import (
    Script,
    capacity_keep_ms,
    from_ms,
    parse_lines,
    parse_reservation,
    reservation_id,
    text,
    to_ms,
)
from service.stock.store import (
    IdempotencyConflict,
    Reservation,
    ReservationLine,
    ReservationNotFound,
    ReservationRequest,
    ReservationResult,
    ReservationStateError,
    ReservedLine,
    ShortLine,
    StockUnavailable,
)

log = logging.getLogger("retail_policy.stock")

LEASE_MS = 30_000  # an intent's owner has this long before the recovery may take it over
KILL_AFTER_STEP = "STOCK_TEST_KILL_AFTER_STEP"
OPEN_TRIES = 20  # a concurrent attempt on the same reservation is waited for up to about a second
OPEN_WAIT_SECONDS = 0.05


class Busy(StockUnavailable):
    def __init__(self) -> None:
        super().__init__("another request on this reservation is under way", retry_after=1)


class CrossSlot:
    """The steps, compensation and recovery of cross-slot requests of one cluster store."""

    def __init__(self, store: Any) -> None:
        self.store = store  # a RedisStockStore (not imported: it imports this module)
        self.keys = store.keys
        self.intents = Intents(store.journal)
        self.script = Script("steps")
        armed = os.environ.get(KILL_AFTER_STEP, "")
        self._kill_after = int(armed) if armed.isdigit() else 0

    # ---- plumbing -------------------------------------------------------------------------------

    def _sku_keys(self, skus: Sequence[str]) -> list[str]:
        """The SKUs' keys, four each (stock, hold, part, avail): every step keeps `avail:{SKU}` with the
        reserved buckets it changes. A slot's capacity part comes after them, three keys (see steps.lua)."""
        return [key for sku in skus for key in self.keys.sku_keys(sku)]

    async def _step(
        self,
        tag: str,
        action: str,
        rid: str,
        attempt: int,
        keys: Sequence[str],
        args: Sequence[Any],
        home: bool,
    ) -> Any:
        head = [self.keys.fence(tag)]
        if home:
            head += [self.keys.reservation(rid), self.keys.holds_at(tag)]
        argv = [action, rid, attempt, self.store._now_ms(), int(home), *args]
        return await self.store._call(self.script, [*head, *keys], argv, tag)

    def _maybe_die(self, steps: int) -> None:
        if self._kill_after and steps >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    async def _open(self, kind: str, rid: str, payload: dict[str, Any]) -> tuple[int, int]:
        """Open the intent (its id, the attempt's token, and its lease). Another attempt on the same
        reservation (a concurrent retry) is waited for a moment, so that the retry then finds its answer;
        one whose lease lapsed is resolved here; one still running after that answers 503."""
        for _ in range(OPEN_TRIES):
            now_ms = self.store._now_ms()
            lease = now_ms + LEASE_MS
            attempt = await self.intents.open(kind, rid, payload, lease, now_ms)
            if attempt is not None:
                return attempt, lease
            existing = await self.intents.get(rid)
            if existing is not None and existing.lease_until_ms < now_ms:
                owned = await self.intents.take_over(existing, now_ms + LEASE_MS)
                if owned is not None:
                    await self._resolve(owned)
                continue
            await asyncio.sleep(OPEN_WAIT_SECONDS)
        raise Busy()

    def _slot_groups(self, slots: Sequence[Sequence[Any]], day: str | None) -> dict[str, list[str]]:
        """Per slot, the keys of an attempt's parts there: its SKUs', then the day's (last)."""
        groups: dict[str, list[str]] = {}
        for tag, skus in slots:
            groups.setdefault(tag, []).extend(self._sku_keys(skus))
        if day is not None:
            groups.setdefault(self.keys.day_tag(day), []).extend(self.keys.capacity(day))
        return groups

    async def _undo(
        self, rid: str, attempt: int, payload: dict[str, Any], only: set[str] | None = None
    ) -> bool:
        """Compensate every part of a reservation attempt (on the slots `only` names: those its own worker
        changed or may have changed), home slot first; True when the home slot says the attempt sealed
        its record (then nothing is undone: the order is whole). When the record is another attempt's,
        this attempt took nothing (it checks for the record before its first step)."""
        home = payload["home"]
        groups = self._slot_groups(payload["slots"], payload.get("day"))
        if only is not None:
            groups = {tag: keys for tag, keys in groups.items() if tag in only}
        if only is None or home in only:
            out = await self._step(home, "undo", rid, attempt, groups.pop(home, []), [payload["exp"]], True)
            verdict = text(out[0])
            if verdict in ("sealed", "other"):
                return verdict == "sealed"
        for tag, keys in groups.items():
            await self._step(tag, "undo", rid, attempt, keys, [payload["exp"]], False)
        return False

    async def _give_up(
        self, rid: str, attempt: int, lease: int, payload: dict[str, Any], touched: set[str]
    ) -> None:
        """Compensate and end the intent; when that fails too, leave it to the recovery now."""
        try:
            if touched:
                await self._undo(rid, attempt, payload, touched)
            await self.intents.drop(attempt, lease)
        except Exception as error:
            log.warning("cross-slot order %s left to the recovery: %s: %s", rid, type(error).__name__, error)
            await self.intents.lapse(attempt, lease)

    # ---- reserve --------------------------------------------------------------------------------

    async def reserve(
        self, request: ReservationRequest, fingerprint: str, lines: list[ReservationLine]
    ) -> ReservationResult:
        keys = self.keys
        skus = list(dict.fromkeys(line.sku for line in lines))
        home = keys.tag(skus[0])
        # "-x-": never the id of a single-slot reservation (same key, another body), whose parts would
        # share this id's fields on a SKU of both
        rid = f"{reservation_id(request.idempotency_key)}-x-{home}"
        claim = request.capacity if request.capacity is not None and request.capacity.limits else None
        need: dict[str, int] = {}
        if claim is not None:
            listed = {limit.location for limit in claim.limits}
            for line in lines:
                if line.location in listed:
                    need[line.location] = need.get(line.location, 0) + line.qty
        day = claim.day if claim is not None and need else None
        # Steps go in slot order, the same for every order, so that concurrent orders on common SKUs meet
        # them in the same order: an order that loses the first contended slot takes nothing there and
        # stops, instead of holding one SKU while another order holds the next (both would then fail).
        # Where a capacity budget can bind (partial grants, or less capacity left than the lines ask),
        # lines meet it in line order as on one node: one step per run of SKUs on one slot.
        ordered = sorted(keys.by_slot(skus).items(), key=lambda item: key_slot(item[0].encode()))
        runs: list[tuple[str, list[str]]] = []
        for sku in skus:
            if runs and runs[-1][0] == keys.tag(sku):
                runs[-1][1].append(sku)
            else:
                runs.append((keys.tag(sku), [sku]))
        now = self.store.now()
        now_ms = to_ms(now)
        exp_ms = to_ms(now + timedelta(seconds=request.ttl_seconds))
        payload: dict[str, Any] = {
            "home": home,
            "exp": exp_ms,
            "slots": [[tag, group] for tag, group in keys.by_slot(skus).items()],
            "day": day,
        }
        attempt, lease = await self._open("reserve", rid, payload)
        try:
            # a reservation under this id (a retry of a granted order): answered before any step
            answer = await self._replay(request, fingerprint, rid, home)
        except Exception:
            await self.intents.lapse(attempt, lease)
            raise
        if answer is not None:
            await self.intents.drop(attempt, lease)
            if isinstance(answer, IdempotencyConflict):
                raise answer
            return answer
        touched: set[str] = set()  # the slots this attempt changed (or may have: a call without an answer)
        try:
            outcome = await self._take(
                request, fingerprint, lines, rid, attempt, payload, (ordered, runs), claim, need, touched
            )
        except Exception:
            await self._give_up(rid, attempt, lease, payload, touched)
            raise
        if isinstance(outcome, ReservationResult):  # short, or a replay: compensated already
            await self._give_up(rid, attempt, lease, payload, touched)
            return outcome
        granted, short = outcome
        counted = ledger.capacity_taken(claim, granted)
        reservation = Reservation(
            id=rid,
            order_id=request.order_id,
            channel=request.channel,
            idempotency_key=request.idempotency_key,
            lines=tuple(granted),
            status="held",
            expires_at=from_ms(exp_ms),
            created_at=from_ms(now_ms),
        )
        encoded_lines = "".join(f"{x.sku}\t{x.location}\t{x.qty}\n" for x in granted)
        fields: list[Any] = ["id", rid, "order_id", request.order_id, "channel", request.channel]
        fields += ["key", request.idempotency_key, "fp", fingerprint, "exp", exp_ms, "created", now_ms]
        fields += ["status", "held", "lines", encoded_lines]
        record: dict[str, Any] = {
            "id": rid,
            "order_id": request.order_id,
            "channel": request.channel,
            "key": request.idempotency_key,
            "fp": fingerprint,
            "exp": exp_ms,
            "created": now_ms,
            "lines": [[x.sku, x.location, x.qty] for x in granted],
        }
        try:
            if day is not None:
                kept = [x for loc in need for x in (loc, counted.get(loc, 0))]
                await self._step(
                    keys.day_tag(day), "trim", rid, attempt, keys.capacity(day), [len(need), *kept], False
                )
            if counted:
                assert claim is not None
                fields += ["cday", claim.day, "cap", "".join(f"{loc}\t{n}\n" for loc, n in counted.items())]
                record["cap"] = [claim.day, [[loc, n] for loc, n in counted.items()]]
            idem = keys.idempotency(rid)
            idem_tag = keys.tag(rid.partition("-")[0])
            before = await self._step(idem_tag, "idem", rid, attempt, [idem], [fingerprint], False)
            if before is not None and text(before) != fingerprint:
                await self._give_up(rid, attempt, lease, payload, touched)
                raise IdempotencyConflict(
                    f"idempotency key {request.idempotency_key!r} was used with another request body"
                )
            touched.add(home)
            sealed = await self._step(home, "seal", rid, attempt, [], [exp_ms, *fields], True)
            if text(sealed[0]) != "sealed":
                raise StockUnavailable("the order was taken over by the recovery", retry_after=1)
        except IdempotencyConflict:
            raise
        except Exception:
            await self._give_up(rid, attempt, lease, payload, touched)
            raise
        entry = Entry("reserve", rid, now_ms, ledger.hold_deltas(granted, 1), record)
        try:
            closed = await self.intents.close(attempt, lease, [entry])
        except StockUnavailable:
            # the order is whole in Redis: the recovery journals it (or finds it journaled)
            await self.intents.lapse(attempt, lease)
            raise
        if not closed:
            raise StockUnavailable("the order was taken over by the recovery", retry_after=1)
        return ReservationResult(reservation, tuple(short))

    async def _replay(
        self, request: ReservationRequest, fingerprint: str, rid: str, home: str
    ) -> ReservationResult | IdempotencyConflict | None:
        flat = await self._step(home, "peek", rid, 0, [], [], True)
        if not flat:
            return None
        fields = {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat), 2)}
        if fields.get("fp") != fingerprint:
            return IdempotencyConflict(
                f"idempotency key {request.idempotency_key!r} was used with another request body"
            )
        found = parse_reservation(flat, self.store._now_ms())
        return ReservationResult(found, tuple(ledger.replayed_short(request, found.lines)), replayed=True)

    async def _take(
        self,
        request: ReservationRequest,
        fingerprint: str,
        lines: list[ReservationLine],
        rid: str,
        attempt: int,
        payload: dict[str, Any],
        plans: tuple[list[tuple[str, list[str]]], list[tuple[str, list[str]]]],
        claim: Any,
        need: dict[str, int],
        touched: set[str],
    ) -> ReservationResult | tuple[list[ReservedLine], list[ShortLine]]:
        """Run the capacity and SKU steps: the granted and short lines (in line order), or the answer when
        nothing is to be kept (short, replay: the caller compensates)."""
        keys = self.keys
        order = {(line.sku, line.location): i for i, line in enumerate(lines)}
        by_sku: dict[str, list[ReservationLine]] = {}
        for line in lines:
            by_sku.setdefault(line.sku, []).append(line)
        budget: dict[str, int] = {}
        day = payload["day"]
        exp_ms = payload["exp"]
        if day is not None:
            limits = {limit.location: limit.limit for limit in claim.limits}
            wanted = [x for loc, n in need.items() for x in (loc, limits[loc], n)]
            keep = capacity_keep_ms(day, self.store._now_ms())
            touched.add(keys.day_tag(day))
            out = await self._step(
                keys.day_tag(day),
                "claim",
                rid,
                attempt,
                keys.capacity(day),
                [exp_ms, keep, len(need), *wanted],
                False,
            )
            if text(out[0]) != "claimed":
                raise StockUnavailable("the order was taken over by the recovery", retry_after=1)
            flat = out[1]
            budget = {text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 3)}
        granted: list[ReservedLine] = []
        short: list[ShortLine] = []
        check = False
        steps = plans[0]
        if day is not None and (request.allow_partial or any(budget[loc] < n for loc, n in need.items())):
            steps = plans[1]
            # all or nothing without the capacity for every line: short for sure; check for the figures
            check = not request.allow_partial
        home = payload["home"]
        for n, (tag, group) in enumerate(steps):
            args: list[Any] = [exp_ms, int(request.allow_partial), int(check), fingerprint, len(budget)]
            for loc, left in budget.items():
                args += [loc, left]
            for sku in group:
                args += [sku, len(by_sku[sku])]
                for line in by_sku[sku]:
                    args += [line.location, line.qty, line.floor]
            changed = tag in touched
            if not check:
                touched.add(tag)
            out = await self._step(tag, "take", rid, attempt, self._sku_keys(group), args, tag == home)
            verdict = text(out[0])
            if verdict not in ("granted", "again") and not changed:
                touched.discard(tag)  # this step took nothing there
            if verdict == "conflict":
                raise IdempotencyConflict(
                    f"idempotency key {request.idempotency_key!r} was used with another request body"
                )
            if verdict == "replay":
                found = parse_reservation(out[1], self.store._now_ms())
                replayed = tuple(ledger.replayed_short(request, found.lines))
                return ReservationResult(found, replayed, replayed=True)
            if verdict == "fenced":
                raise StockUnavailable("the order was taken over by the recovery", retry_after=1)
            f = out[1]
            took = [ReservedLine(text(f[i]), text(f[i + 1]), int(f[i + 2])) for i in range(0, len(f), 3)]
            for got in took:
                if got.location in budget:
                    budget[got.location] -= got.qty
            if verdict in ("granted", "again"):
                granted += took
            f = out[2]
            missing = [
                ShortLine(text(f[i]), text(f[i + 1]), int(f[i + 2]), int(f[i + 3]))
                for i in range(0, len(f), 4)
            ]
            short += missing
            if missing and not request.allow_partial:
                check = True
            self._maybe_die(n + 1)
        short.sort(key=lambda s: order[(s.sku, s.location)])
        if not granted or (short and not request.allow_partial):
            return ReservationResult(None, tuple(short))
        granted.sort(key=lambda g: order[(g.sku, g.location)])
        return granted, short

    # ---- commit and release ---------------------------------------------------------------------

    def is_cross_slot(self, reservation: Reservation, day: str | None) -> bool:
        home = self.keys.home(reservation.id)
        return day is not None or any(self.keys.tag(line.sku) != home for line in reservation.lines)

    def _finish_payload(self, reservation: Reservation, day: str | None) -> dict[str, Any]:
        home = self.keys.home(reservation.id) or ""
        skus = list(dict.fromkeys(line.sku for line in reservation.lines))
        return {
            "home": home,
            "exp": to_ms(reservation.expires_at),
            "slots": [[tag, group] for tag, group in self.keys.by_slot(skus).items()],
            "day": day,
        }

    def _others(self, payload: dict[str, Any]) -> list[tuple[str, list[str], bool]]:
        """The parts a finish applies after the home slot's decision: (tag, keys, is the capacity part)."""
        found = [
            (tag, self._sku_keys(skus), False) for tag, skus in payload["slots"] if tag != payload["home"]
        ]
        day = payload.get("day")
        if day is not None:
            found.append((self.keys.day_tag(day), self.keys.capacity(day), True))
        return found

    async def finish(self, reservation: Reservation, day: str | None, action: str) -> Reservation:
        rid = reservation.id
        payload = self._finish_payload(reservation, day)
        home = payload["home"]
        home_skus: list[str] = next((skus for tag, skus in payload["slots"] if tag == home), [])
        attempt, lease = await self._open(action, rid, payload)
        pinned: list[tuple[str, list[str], bool]] = []
        decided = False
        try:
            if action == "commit":
                for tag, keys, is_cap in self._others(payload):
                    out = await self._step(tag, "pin", rid, attempt, keys, [], False)
                    if text(out[0]) != "pinned":
                        break  # a part expired: the decision below finds the reservation expired
                    pinned.append((tag, keys, is_cap))
            out = await self._step(home, "finish", rid, attempt, self._sku_keys(home_skus), [action], True)
            verdict = text(out[0])
            if verdict != "done":
                await self._unpin(rid, attempt, pinned, payload["exp"])
                await self.intents.drop(attempt, lease)
                if verdict in ("missing", "fenced"):
                    if verdict == "fenced":
                        raise StockUnavailable("the request was taken over by the recovery", retry_after=1)
                    raise ReservationNotFound(f"no reservation {rid!r}")
                done = parse_reservation(out[1], self.store._now_ms())
                if verdict == "state":
                    raise ReservationStateError(f"reservation {rid} is {done.status}", done.status)
                return done
            decided = True
            done = parse_reservation(out[1], self.store._now_ms())
            await self._apply(rid, attempt, payload, action)
        except (ReservationNotFound, ReservationStateError):
            raise
        except Exception:
            if decided:
                await self.intents.lapse(attempt, lease)  # decided: the recovery rolls it forward
            else:
                try:
                    await self._unpin(rid, attempt, pinned, payload["exp"])
                    await self.intents.drop(attempt, lease)
                except Exception:
                    await self.intents.lapse(attempt, lease)
            raise
        deltas = (
            ledger.commit_deltas(done.lines) if action == "commit" else ledger.hold_deltas(done.lines, -1)
        )
        try:
            closed = await self.intents.close(
                attempt, lease, [Entry(action, rid, to_ms(self.store.now()), deltas, {"seq": out[2]})]
            )
        except StockUnavailable:
            await self.intents.lapse(attempt, lease)
            raise
        if not closed:
            raise StockUnavailable("the request was taken over by the recovery", retry_after=1)
        return done

    async def _unpin(
        self, rid: str, attempt: int, pinned: Sequence[tuple[str, list[str], bool]], exp: int
    ) -> None:
        for tag, keys, _ in pinned:
            await self._step(tag, "unpin", rid, attempt, keys, [exp], False)

    async def _apply(self, rid: str, attempt: int, payload: dict[str, Any], action: str) -> None:
        for tag, keys, is_cap in self._others(payload):
            what = "keep" if is_cap and action == "commit" else action
            await self._step(tag, "apply", rid, attempt, keys, [what], False)

    # ---- recovery -------------------------------------------------------------------------------

    async def recover_due(self, limit: int = 100) -> int:
        """Resolve the intents whose lease lapsed (one owner each); how many this worker resolved."""
        now_ms = self.store._now_ms()
        resolved = 0
        for intent in await self.intents.due(now_ms, limit):
            owned = await self.intents.take_over(intent, now_ms + LEASE_MS)
            if owned is None:
                continue
            try:
                await self._resolve(owned)
                resolved += 1
            except Exception as error:  # its lease lapses again and the next sweep tries again
                log.warning(
                    "cross-slot intent %s not resolved: %s: %s", owned.rid, type(error).__name__, error
                )
        return resolved

    async def _record(self, rid: str, home: str) -> dict[str, str]:
        flat = await self._step(home, "peek", rid, 0, [], [], True)
        return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def _resolve(self, intent: Intent) -> None:
        payload, rid, attempt = intent.payload, intent.rid, intent.id
        if intent.kind == "reserve":
            if not await self._undo(rid, attempt, payload):
                await self.intents.drop(attempt, intent.lease_until_ms)
                log.warning("cross-slot order %s compensated by the recovery", rid)
                return
            fields = await self._record(rid, payload["home"])
            lines = parse_lines(fields["lines"])
            record: dict[str, Any] = {
                "id": rid,
                "order_id": fields["order_id"],
                "channel": fields["channel"],
                "key": fields["key"],
                "fp": fields["fp"],
                "exp": int(fields["exp"]),
                "created": int(fields["created"]),
                "lines": [[x.sku, x.location, x.qty] for x in lines],
            }
            if "cday" in fields:
                taken = [row.split("\t") for row in fields["cap"].splitlines() if row]
                record["cap"] = [fields["cday"], [[loc, int(n)] for loc, n in taken]]
            entry = Entry("reserve", rid, int(fields["created"]), ledger.hold_deltas(lines, 1), record)
            await self.intents.close(attempt, intent.lease_until_ms, [entry])
            log.warning("cross-slot order %s completed by the recovery", rid)
            return
        home = payload["home"]
        out = await self._step(home, "resolve", rid, attempt, [], [payload["exp"]], True)
        if text(out[0]) != str(attempt):
            if intent.kind == "commit":
                pins = self._others(payload)
                await self._unpin(rid, attempt, pins, payload["exp"])
            await self.intents.drop(attempt, intent.lease_until_ms)
            return
        await self._apply(rid, attempt, payload, intent.kind)
        lines = parse_lines((await self._record(rid, home))["lines"])
        deltas = ledger.commit_deltas(lines) if intent.kind == "commit" else ledger.hold_deltas(lines, -1)
        entry = Entry(intent.kind, rid, self.store._now_ms(), deltas, {})
        await self.intents.close(attempt, intent.lease_until_ms, [entry])
        log.warning("cross-slot %s of %s completed by the recovery", intent.kind, rid)
