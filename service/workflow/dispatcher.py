"""The dispatcher: delivers outbox events to their subscribers as signed webhooks, at least once.

Two steps, each safe with any number of dispatchers on one database:

1. Fan-out. Outbox events not yet in `outbox_dispatch` (up to `fan_out_batch`) get their
   `outbox_dispatch` rows and one `deliveries` row per subscription whose patterns match their kind, in
   one transaction. The rows are inserted by one `INSERT ... SELECT ... ON CONFLICT DO NOTHING` (no row
   of it passes through the client): an event whose row is there already gets no deliveries again, so
   deliveries exist once. A round looks only past the database's one mark (`outbox_mark`, shared by every
   dispatcher of every process and host): every event before it has its dispatch row. A round holds the
   mark while it reads and claims, and writes the mark it moved to in the claim's transaction: a round
   that fails leaves it where it was, and a dispatcher started later (a restart, another worker) goes on
   from it, so however many dispatchers run, a backlog is read about once and each event claimed once.
   An empty mark (a database just migrated to having one) means every event is looked at.
   On SQLite the mark is an outbox id: events commit in the order of their ids there (one writer at a
   time, an id given at insert as one more than the highest). A mark past the highest id (an outbox
   emptied by hand, whose ids SQLite then gives again) is taken for none. On a SQLite file a round is a
   write of the file's `SqliteWriter` (`service.workflow.fan_out`): it reads the mark, reads and claims
   the batch and writes the mark back in one transaction that holds the write lock from its first
   statement, beside the other writes of that turn of the event loop, so the processes on one file share
   it. Through the engine (an in-memory database) the round's first statement writes the mark's row, which
   takes the write lock the same way.
   On PostgreSQL an id is taken when the row is inserted and transactions commit in any order, so the
   mark is a set of transactions instead: each event carries its writing transaction's id (`txid`), and a
   round that claimed everything it found moves the mark to the transactions its read could not see
   (those running when it took its snapshot, and those from its xmax on: `Unseen`); every other one had
   committed or rolled back, its events visible to that read. A transaction open elsewhere for long (a
   report, another database's) costs nothing but its own events. A round that claimed a full batch moves
   the mark to how far it got (`Past`): the next one reads the events of the transactions its read could
   not see and those after its highest id, so a backlog is read about once, not once per batch. A round
   is one transaction: it locks the mark's row without waiting (`FOR UPDATE SKIP LOCKED`), and when
   another dispatcher's round holds it, this round does no fan-out (its deliveries still run) and the
   dispatcher waits for its next round as after any round that was not full. Then it reads the batch in
   a statement of its own, whose snapshot (READ COMMITTED: one per statement) sees every claim of the
   round that moved the mark last, claims, writes the mark and commits. A round left idle holding the
   mark (its process frozen) is ended by the server after `mark_idle_seconds`. A mark past the server's
   transactions (a database restored from a dump into another server) is taken for none.
   Neither database looks at the whole outbox again once the mark is set.
2. Delivery. A due pending delivery is claimed with a lease (`UPDATE ... SET lease_until WHERE
   lease_until IS NULL OR lease_until < now`): only the dispatcher whose update took the row sends it,
   and its outcome is written only while it still holds that lease. A dispatcher that stops mid-way
   leaves the lease to lapse; another one then sends the delivery again (receivers de-duplicate by the
   event id). A failed attempt waits `base * 2**(attempt-1)` seconds (capped), scaled by a random factor
   in [0.5, 1); after `max_attempts` failures the delivery is dead and a `failed_delivery` exception
   opens. `retry` gives a dead delivery a fresh set of attempts.

The clock and the random source are injected, so tests move time instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import msgspec
from sqlalchemy import Select, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.base import aware, utc_now
from service.db.engine import as_sqlalchemy_binds
from service.db.models import Delivery, OutboxEvent, Subscription
from service.db.sqlite_writer import SqliteWriter, SqliteWriters
from service.decisions.ids import new_decision_id
from service.workflow.exceptions import clear_exception, raise_exception
from service.workflow.fan_out import (
    DISPATCH,
    EVENTS,
    HIGHEST_ID,
    SqliteRound,
    claim_range,
    fan_out_sqlite,
    hold_mark,
    moved,
    next_batch,
    stale,
    write_mark,
)
from service.workflow.subscriptions import DELIVERY_ID, EVENT_ID, SIGNATURE, TIMESTAMP, matches, sign

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MAX_BODY_BYTES = 256 * 1024  # an event larger than this is dead-lettered rather than sent
USER_AGENT = "retail-policy-webhooks/1"


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int = 8
    base_delay_seconds: float = 5.0
    max_delay_seconds: float = 3600.0
    timeout_seconds: float = 10.0
    max_body_bytes: int = MAX_BODY_BYTES
    batch: int = 100  # deliveries claimed per round (each sent within the lease)
    # events fanned out per round: a round costs its statements whatever its size, and events arrive by
    # the thousand per second under load (three per executed transfer), each needing only its claim row
    fan_out_batch: int = 2000
    concurrency: int = 8  # requests in flight per dispatcher
    # on PostgreSQL, how long a round's transaction may stay idle holding the database's fan-out mark
    # before the server ends it (a frozen process would otherwise hold it from every dispatcher)
    mark_idle_seconds: float = 60.0
    # events older than this whose every delivery was delivered (or that had none) are deleted, with their
    # dispatch and delivery rows, about every `prune_seconds`; None keeps every event. The audit log, not
    # the outbox, is the record of what happened
    retention: timedelta | None = timedelta(days=30)
    prune_seconds: float = 3600.0
    prune_batch: int = 1000  # events deleted per transaction

    @property
    def lease(self) -> timedelta:
        # longer than any attempt can take, so a live dispatcher never loses its lease mid-request
        return timedelta(seconds=self.timeout_seconds * 3 + 30)

    def backoff(self, attempts: int, draw: float) -> timedelta:
        """The wait after `attempts` failed attempts; `draw` in [0, 1) is the jitter."""
        delay = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempts - 1))
        return timedelta(seconds=delay * (0.5 + 0.5 * draw))


def event_body(event: OutboxEvent) -> bytes:
    """What a subscriber receives: the event, as compact JSON."""
    return msgspec.json.encode(
        {
            "id": event.event_id,
            "kind": event.kind,
            "subject": event.subject,
            "created_at": aware(event.created_at),
            "payload": event.payload,
        }
    )


def _prunable(cutoff: datetime, size: int) -> Select[tuple[Any]]:
    """The event ids of up to `size` of the oldest events written before `cutoff` that were fanned out and
    whose deliveries were all delivered. Such an event gets no delivery again (fan-out writes an event's
    deliveries with its dispatch row; only a dead delivery is retried), so the set only grows. The newest
    event is never one: SQLite gives a new row the highest id there is plus one, so while it stays no id is
    given twice, and no event is written below the fan-out mark."""
    unsettled = select(Delivery.id).where(
        Delivery.event_id == EVENTS.c.event_id, Delivery.status != "delivered"
    )
    fanned_out = select(DISPATCH.c.event_id).where(DISPATCH.c.event_id == EVENTS.c.event_id)
    return (
        select(EVENTS.c.event_id)
        .where(
            EVENTS.c.created_at < cutoff,
            EVENTS.c.id < HIGHEST_ID,
            fanned_out.exists(),
            ~unsettled.exists(),
        )
        .order_by(EVENTS.c.id)
        .limit(size)
    )


@dataclass(frozen=True)
class _Outcome:
    delivered: bool
    error: str | None = None  # what readers of the delivery see: the HTTP status or the kind of failure


class Dispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        policy: DeliveryPolicy | None = None,
        *,
        clock: Clock = utc_now,
        draw: Callable[[], float] = random.random,
        transport: httpx.AsyncBaseTransport | None = None,
        owner: str | None = None,
        sqlite_writers: SqliteWriters | None = None,
    ) -> None:
        self.sessions = sessions
        self.policy = policy or DeliveryPolicy()
        self.clock = clock
        self.draw = draw
        self.owner = owner or new_decision_id()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.policy.timeout_seconds),
            follow_redirects=False,
            transport=transport,
            headers={"User-Agent": USER_AGENT},
        )
        self._wake = asyncio.Event()
        self._full = False  # the last round found a full batch: more may be waiting
        self._dialect: str | None = None  # the database's dialect name, read in the first round
        self._pruned_at: datetime | None = None  # when old delivered events were last deleted
        # on a SQLite file, fan-out goes through the file's writer (the app's, shared with its other
        # writes: `service.workflow.fan_out`); the dispatcher closes one it made itself
        self._writer: SqliteWriter | None = None
        self._owns_writer = sqlite_writers is None
        self._at_text: Callable[[Any], Any] = lambda value: value
        bind = sessions.kw.get("bind")
        if bind is not None and bind.dialect.name == "sqlite":
            self._writer = (sqlite_writers or SqliteWriters()).for_url(bind.url)
            self._at_text = as_sqlalchemy_binds(DISPATCH.c.at.type, bind.dialect)

    async def close(self) -> None:
        await self._client.aclose()
        if self._writer is not None and self._owns_writer:
            await self._writer.close()

    def wake(self) -> None:
        """Start the next round now (new outbox events were written)."""
        self._wake.set()

    async def run_once(self) -> tuple[int, int]:
        """One round: fan out new events, then send what is due, and when it is time delete old delivered
        events; answers (fanned out, attempted)."""
        counts = await self.fan_out(), await self.deliver_due()
        now, retention = self.clock(), self.policy.retention
        if retention is not None and (
            self._pruned_at is None or now - self._pruned_at >= timedelta(seconds=self.policy.prune_seconds)
        ):
            self._pruned_at = now
            await self.prune(now - retention)
        return counts

    async def prune(self, cutoff: datetime) -> int:
        """Delete the events written before `cutoff` whose deliveries were all delivered, with those
        deliveries and their dispatch rows, `prune_batch` events a transaction; answers how many."""
        pruned = 0
        while True:
            async with self.sessions() as session, session.begin():
                # the events first, by a statement that writes (on SQLite it takes the write lock before
                # reading); then the rows that name them
                gone = delete(EVENTS).where(EVENTS.c.event_id.in_(_prunable(cutoff, self.policy.prune_batch)))
                ids = list((await session.execute(gone.returning(EVENTS.c.event_id))).scalars())
                if ids:
                    await session.execute(delete(Delivery).where(Delivery.event_id.in_(ids)))
                    await session.execute(delete(DISPATCH).where(DISPATCH.c.event_id.in_(ids)))
            pruned += len(ids)
            if len(ids) < self.policy.prune_batch:
                return pruned

    async def run(self, interval: float) -> None:
        """Rounds until cancelled; a failing round is logged and the next one tries again. After a round
        that was not full (one that found another dispatcher's round holding the fan-out mark is not) the
        next waits `interval` seconds, or until a wake; a wake during a round starts the next at once."""
        while True:
            self._wake.clear()
            try:
                _fanned, attempted = await self.run_once()
                full = self._full or attempted >= self.policy.batch
            except Exception:
                log.exception("a webhook dispatch round failed")
                full = False
            if full:
                continue  # a full round: more may be waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    # --- fan-out -------------------------------------------------------------------------------------

    async def fan_out(self) -> int:
        """One fan-out round from the database's mark (see the module); answers how many events it
        claimed. A round that finds another dispatcher's round holding the mark claims nothing."""
        now, size = self.clock(), self.policy.fan_out_batch
        self._full = False
        if self._writer is not None:
            # the claim and the mark commit before the writer answers
            claimed, found = await self._writer.submit(fan_out_sqlite, SqliteRound(size, self._at_text(now)))
            self._full = found >= size
            return claimed
        async with self.sessions() as session, session.begin():
            if self._dialect is None:
                self._dialect = session.get_bind().dialect.name
            postgres = self._dialect == "postgresql"
            held, mark = await hold_mark(session, postgres, self.policy.mark_idle_seconds)
            if not held:  # another dispatcher's round holds the mark: the events it reads are its own
                return 0
            # the next batch of events without their dispatch row (ids only, no rows to the client). On
            # PostgreSQL a statement of its own after the mark is held: its snapshot sees every claim of
            # the round that moved the mark last (READ COMMITTED: a snapshot per statement)
            low, upto, found, after = (await session.execute(next_batch(postgres, mark, size))).one()
            if not postgres and stale(mark, after):
                mark = None
                low, upto, found, after = (await session.execute(next_batch(postgres, mark, size))).one()
            claimed = 0 if upto is None else await self._claim(session, postgres, low, upto, now)
            # the mark moves in the claim's transaction: a round that fails leaves it where it was
            await write_mark(session, mark, moved(postgres, mark, size, found, after, upto))
        self._full = found >= size
        return claimed

    async def _claim(self, session: AsyncSession, postgres: bool, low: int, upto: int, now: datetime) -> int:
        """Claim the batch's events, from `low` up to `upto`, and write their deliveries; answers how many.
        One statement claims them in the database (an event committed meanwhile inside the range comes
        along); only those whose dispatch row it adds get deliveries here."""
        subscriptions = (await session.execute(select(Subscription))).scalars().all()
        connection = await session.connection()
        claim = claim_range(postgres, low, upto, now)
        if not subscriptions:  # nobody to deliver to: the claims alone
            return int((await connection.execute(claim)).rowcount)
        ids = set((await connection.execute(claim.returning(DISPATCH.c.event_id))).scalars())
        kinds = select(OutboxEvent.event_id, OutboxEvent.kind).where(OutboxEvent.event_id.in_(ids))
        for event_id, kind in (await session.execute(kinds)).all() if ids else ():
            for subscription in subscriptions:
                if matches(subscription.events, kind):
                    session.add(
                        Delivery(
                            id=new_decision_id(),
                            event_id=event_id,
                            subscription_id=subscription.id,
                            kind=kind,
                            status="pending",
                            attempts=0,
                            next_attempt_at=now,
                            created_at=now,
                        )
                    )
        return len(ids)

    # --- delivery -------------------------------------------------------------------------------------

    async def deliver_due(self) -> int:
        now = self.clock()
        claimable = (
            Delivery.status == "pending",
            Delivery.next_attempt_at <= now,
            or_(Delivery.lease_until.is_(None), Delivery.lease_until < now),
        )
        due = (
            select(Delivery.id)
            .where(*claimable)
            .order_by(Delivery.next_attempt_at)
            .limit(self.policy.batch)
            .scalar_subquery()
        )
        # most rounds find nothing due: a read says so without taking the write lock (a write transaction
        # on SQLite) for a claim of nothing
        async with self.sessions() as session:
            if (await session.execute(select(Delivery.id).where(*claimable).limit(1))).first() is None:
                return 0
        # one statement, so SQLite takes its write lock before reading (a read that later writes can fail
        # when another writer commits in between); PostgreSQL re-checks `claimable` on a row it waited for
        async with self.sessions() as session, session.begin():
            claimed = (
                (
                    await session.execute(
                        update(Delivery)
                        .where(Delivery.id.in_(due), *claimable)
                        .values(lease_until=now + self.policy.lease, lease_owner=self.owner)
                        .returning(Delivery.id)
                    )
                )
                .scalars()
                .all()
            )
        if not claimed:
            return 0
        gate = asyncio.Semaphore(self.policy.concurrency)

        async def one(delivery_id: str) -> None:
            async with gate:
                await self._attempt(delivery_id)

        await asyncio.gather(*(one(delivery_id) for delivery_id in claimed))
        return len(claimed)

    async def _attempt(self, delivery_id: str) -> None:
        async with self.sessions() as session:
            delivery = await session.get(Delivery, delivery_id)
            if delivery is None:
                return
            event = (
                await session.execute(select(OutboxEvent).where(OutboxEvent.event_id == delivery.event_id))
            ).scalar_one_or_none()
            subscription = await session.get(Subscription, delivery.subscription_id)
        if event is None or subscription is None:  # the subscription was removed: nothing to send
            async with self.sessions() as session, session.begin():
                await session.execute(
                    update(Delivery)
                    .where(Delivery.id == delivery_id, Delivery.lease_owner == self.owner)
                    .values(status="dead", last_error="subscription removed", lease_until=None)
                )
            return
        sent_at = self.clock()
        outcome = await self._send(delivery, event, subscription, sent_at)
        await self._record(delivery, event, outcome)

    async def _send(
        self, delivery: Delivery, event: OutboxEvent, subscription: Subscription, now: datetime
    ) -> _Outcome:
        body = event_body(event)
        if len(body) > self.policy.max_body_bytes:
            return _Outcome(False, f"event body over {self.policy.max_body_bytes} bytes")
        timestamp = int(now.timestamp())
        headers = {
            "Content-Type": "application/json",
            EVENT_ID: event.event_id,
            DELIVERY_ID: delivery.id,
            TIMESTAMP: str(timestamp),
            SIGNATURE: sign(subscription.secret, timestamp, event.event_id, body),
        }
        try:
            # streamed and never read: a receiver's answer body does not matter and may be large
            async with self._client.stream("POST", subscription.url, content=body, headers=headers) as answer:
                status = answer.status_code
        except httpx.TimeoutException:
            return _Outcome(False, "timeout")
        except httpx.HTTPError as error:
            log.warning("webhook %s to subscription %s failed: %r", delivery.id, subscription.id, error)
            return _Outcome(False, "connection failed")
        if 200 <= status < 300:
            return _Outcome(True)
        return _Outcome(False, f"HTTP {status}")

    async def _record(self, delivery: Delivery, event: OutboxEvent, outcome: _Outcome) -> None:
        now = self.clock()
        attempts = delivery.attempts + 1
        values: dict[str, Any] = {
            "attempts": attempts,
            "last_attempt_at": now,
            "lease_until": None,
            "lease_owner": None,
            "last_error": outcome.error,
        }
        dead = False
        if outcome.delivered:
            values.update(status="delivered", delivered_at=now)
        elif attempts >= self.policy.max_attempts or (outcome.error or "").startswith("event body"):
            values.update(status="dead")
            dead = True
        else:
            values.update(next_attempt_at=now + self.policy.backoff(attempts, self.draw()))
        async with self.sessions() as session, session.begin():
            changed = (
                await session.execute(
                    update(Delivery)
                    .where(
                        Delivery.id == delivery.id,
                        Delivery.lease_owner == self.owner,
                        Delivery.status == "pending",
                    )
                    .values(**values)
                    .returning(Delivery.id)
                )
            ).scalar_one_or_none()
            if changed is None:
                return  # the lease lapsed and another dispatcher has this delivery now
            if dead:
                await raise_exception(
                    session,
                    "failed_delivery",
                    delivery.id,
                    detail={
                        "delivery_id": delivery.id,
                        "event_id": event.event_id,
                        "event_kind": event.kind,
                        "subscription": delivery.subscription_id,
                        "attempts": attempts,
                        "last_error": outcome.error,
                    },
                    now=now,
                    announce=not event.kind.startswith("exception."),
                )


class DeliveryStateError(Exception):
    def __init__(self, delivery_id: str, status: str) -> None:
        super().__init__(f"delivery {delivery_id} is {status}; only a dead delivery can be retried")
        self.status = status


class UnknownDelivery(Exception):
    def __init__(self, delivery_id: str) -> None:
        super().__init__(f"no delivery {delivery_id!r}")


async def retry(session: AsyncSession, delivery_id: str, now: datetime) -> Delivery:
    """A dead delivery becomes pending again with a fresh set of attempts; its exception resolves."""
    changed = (
        await session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.status == "dead")
            .values(status="pending", attempts=0, next_attempt_at=now, lease_until=None, lease_owner=None)
            .returning(Delivery.id)
        )
    ).scalar_one_or_none()
    delivery = await session.get(Delivery, delivery_id, populate_existing=True)
    if delivery is None:
        raise UnknownDelivery(delivery_id)
    if changed is None:
        raise DeliveryStateError(delivery_id, delivery.status)
    await clear_exception(session, "failed_delivery", delivery_id, now)
    return delivery
