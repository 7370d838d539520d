"""The checks that open exceptions while their condition holds and resolve them when it clears.

`ExceptionMonitor.check()` runs every condition against the live data (periodically, see `run`); the
stock endpoint calls `after_stock_events` with what it just applied, so a negative location, a booked-in
transfer or a promoted SKU falling to its floor is seen at once rather than at the next check. Both only
read, then raise and clear in a transaction of their own: raising and clearing are idempotent, so a
check that races another (or a person) leaves at most one open record per condition.

Conditions and their keys:
- negative_inventory `sku@location`: sellable below reserved (a POS sale took stock that was not there).
- oversell_risk `sku@location/channel`: a SKU promoted there for that channel whose available stock is at
  or below the channel's floor (the availability ruleset's answer, as availability decisions read it).
- delayed_receipt `<transfer_out event id>`: units sent with an `expected_at` that is past, not all in yet.
- stuck_approval `<case id>`: a pending approval case past its `sla_due_at`.
- failed_delivery `<delivery id>`: a dead webhook delivery (raised by the dispatcher; cleared here when the
  delivery is no longer dead).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.base import aware
from service.db.models import ApprovalCase, Delivery, ExpectedReceipt
from service.decisions.availability import ChannelPolicies
from service.decisions.context import DecisionContext
from service.decisions.log import NullDecisionLog
from service.decisions.rules import RulesSource, rules_view
from service.errors import ServiceError
from service.masterdata import MasterDataCache
from service.stock.store import EventResult, Levels, StockEvent, StockStore
from service.workflow.exceptions import clear_exception, raise_exception, unresolved_keys
from service.workflow.rounds import PENDING

log = logging.getLogger(__name__)
ANOMALIES_READ = 1000  # recent stock anomalies a check looks at for negative locations
# receipts with units still to come, as the partial indexes of receipts name them: in a literal, so that
# SQLite and PostgreSQL's plan of a prepared statement may use them (a receipt fully in is in neither)
OUTSTANDING = ExpectedReceipt.outstanding > literal_column("0")


@dataclass(frozen=True)
class Condition:
    """One live instance of a condition: what `raise_exception` records."""

    key: str
    detail: dict[str, Any]
    location: str | None = None
    sku: str | None = None


def _negative(levels: Levels) -> bool:
    return levels.sellable < levels.reserved


def _split(key: str) -> tuple[str, str]:
    sku, _, location = key.partition("@")
    return sku, location


class ExceptionMonitor:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        stock: StockStore | None,
        master_data: MasterDataCache | None = None,
        rules: RulesSource | None = None,
        *,
        oversell_channels: Sequence[str] = ("ecommerce", "store"),
        clock: Callable[[], datetime],
    ) -> None:
        self.sessions = sessions
        self.stock = stock
        self.master_data = master_data
        self.rules = rules
        self.oversell_channels = tuple(oversell_channels)
        self.clock = clock

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check()
            except Exception:
                log.exception("the exception check failed")

    async def check(self) -> None:
        """Every condition, as the data stands now."""
        now = self.clock()
        await self.check_stuck_approvals(now)
        await self.check_delayed_receipts(now)
        await self.check_negative_inventory(now)
        await self.check_oversell(now)
        await self.check_failed_deliveries(now)

    async def _settle(
        self,
        kind: str,
        live: Iterable[Condition],
        now: datetime,
        scope: Callable[[str], bool] | None = None,
    ) -> None:
        """Raise every live condition and clear the unresolved ones of `kind` (within `scope`) that are not."""
        current = {condition.key: condition for condition in live}
        async with self.sessions() as session:
            known = await unresolved_keys(session, kind)
        stale = [key for key in known if key not in current and (scope is None or scope(key))]
        fresh = [condition for key, condition in current.items() if key not in known]
        if not stale and not fresh:
            return
        async with self.sessions() as session, session.begin():
            for condition in fresh:
                await raise_exception(
                    session,
                    kind,
                    condition.key,
                    location=condition.location,
                    sku=condition.sku,
                    detail=condition.detail,
                    now=now,
                )
            for key in stale:
                await clear_exception(session, kind, key, now)

    # --- the conditions ----------------------------------------------------------------------------

    async def check_stuck_approvals(self, now: datetime) -> None:
        async with self.sessions() as session:
            cases = (
                await session.execute(
                    select(ApprovalCase).where(
                        PENDING,
                        ApprovalCase.sla_due_at.is_not(None),
                        ApprovalCase.sla_due_at < now,
                    )
                )
            ).scalars()
            live = [
                Condition(
                    case.id,
                    {
                        "case_id": case.id,
                        "case_kind": case.kind,
                        "subject": case.subject,
                        "approvers": case.approvers,
                        "escalation_level": case.escalation_level,
                        "sla_due_at": aware(case.sla_due_at).isoformat() if case.sla_due_at else None,
                    },
                )
                for case in cases
            ]
        await self._settle("stuck_approval", live, now)

    async def check_delayed_receipts(self, now: datetime) -> None:
        async with self.sessions() as session:
            late = (
                await session.execute(
                    select(ExpectedReceipt).where(OUTSTANDING, ExpectedReceipt.expected_at < now)
                )
            ).scalars()
            live = [
                Condition(
                    receipt.event_id,
                    {
                        "transfer_event_id": receipt.event_id,
                        "reference": receipt.reference,
                        "from_location": receipt.from_location,
                        "qty": receipt.qty,
                        "outstanding": receipt.outstanding,
                        "expected_at": aware(receipt.expected_at).isoformat(),
                    },
                    location=receipt.to_location,
                    sku=receipt.sku,
                )
                for receipt in late
            ]
        await self._settle("delayed_receipt", live, now)

    async def check_negative_inventory(
        self, now: datetime, touched: set[tuple[str, str]] | None = None, events: Sequence[Any] = ()
    ) -> None:
        """Every location a recent anomaly or an open record names (or only `touched` ones)."""
        if self.stock is None:
            return
        async with self.sessions() as session:
            known = {_split(key) for key in await unresolved_keys(session, "negative_inventory")}
        anomalies: dict[tuple[str, str], Any] = {}
        recent = events if touched is not None else await self.stock.list_exceptions(ANOMALIES_READ)
        for anomaly in recent:
            if anomaly.kind == "negative_inventory":
                anomalies.setdefault((anomaly.sku, anomaly.location), anomaly)
        places = (known | set(anomalies)) if touched is None else (touched & known) | set(anomalies)
        if not places:
            return
        levels = await self.stock.get_levels(sorted({sku for sku, _ in places}))
        live = []
        for sku, location in places:
            found = levels.get(sku, {}).get(location)
            if found is None or not _negative(found):
                continue
            anomaly = anomalies.get((sku, location))
            detail = {"sellable": found.sellable, "reserved": found.reserved}
            if anomaly is not None:
                detail.update(event_id=anomaly.event_id, qty=anomaly.qty, shortfall=anomaly.shortfall)
            live.append(Condition(f"{sku}@{location}", detail, location=location, sku=sku))
        scope = None if touched is None else (lambda key: _split(key) in places)
        await self._settle("negative_inventory", live, now, scope)

    async def check_oversell(self, now: datetime, skus: set[str] | None = None) -> None:
        """Promoted SKUs (only `skus` when given) at or below a channel's floor where it is promoted."""
        if self.stock is None or self.master_data is None or self.rules is None:
            return
        md = await self.master_data.get()
        promoted: dict[tuple[str, str, str], str] = {}  # (sku, location, channel) -> promotion id
        for promotion in md.promotions:
            if not promotion.active_at(now):
                continue
            locations = promotion.locations or tuple(md.locations)
            channels = promotion.channels or self.oversell_channels
            for sku in promotion.skus:
                if sku in md.items and (skus is None or sku in skus):
                    for location in locations:
                        for channel in channels:
                            if location in md.locations:
                                promoted.setdefault((sku, location, channel), promotion.id)
        if skus is not None and not promoted:
            return  # none of these is promoted now; records of ended promotions go at the periodic check
        live = []
        if promoted:
            try:
                ctx = DecisionContext(
                    stock=self.stock,
                    master_data=md,
                    rules=rules_view(self.rules),
                    log=NullDecisionLog(),
                    now=now,
                )
                policies = {channel: ChannelPolicies(ctx, channel, "none") for _, _, channel in promoted}
            except ServiceError as error:  # no availability ruleset loaded: nothing to compare with
                log.warning("oversell check skipped: %s", error.detail)
                return
            available = await self.stock.get_available(sorted({sku for sku, _, _ in promoted}))
            for (sku, location, channel), promotion_id in sorted(promoted.items()):
                policy = policies[channel].policy(md.items[sku], md.locations[location])
                units = available.get(sku, {}).get(location, 0)
                if policy.eligible and units <= policy.floor:
                    live.append(
                        Condition(
                            f"{sku}@{location}/{channel}",
                            {
                                "channel": channel,
                                "available": units,
                                "floor": policy.floor,
                                "promotion": promotion_id,
                            },
                            location=location,
                            sku=sku,
                        )
                    )
        scope = None if skus is None else (lambda key: _split(key)[0] in skus)
        await self._settle("oversell_risk", live, now, scope)

    async def check_failed_deliveries(self, now: datetime) -> None:
        """Records of deliveries no longer dead (retried, or delivered) resolve; the dispatcher raises them."""
        async with self.sessions() as session:
            known = await unresolved_keys(session, "failed_delivery")
            if not known:
                return
            dead = set(
                (
                    await session.execute(
                        select(Delivery.id).where(Delivery.id.in_(known), Delivery.status == "dead")
                    )
                ).scalars()
            )
        async with self.sessions() as session, session.begin():
            for key in known - dead:
                await clear_exception(session, "failed_delivery", key, now)

    # --- hooks --------------------------------------------------------------------------------------

    async def after_stock_events(
        self,
        events: Sequence[StockEvent],
        results: Sequence[EventResult],
        expected_at: Mapping[str, datetime] | None = None,
    ) -> None:
        """What the stock endpoint just applied (`expected_at`: transfer_out event id -> when its units
        should arrive): record expected receipts, book transfers in, and look at the touched locations'
        negative inventory and promoted SKUs at once."""
        now = self.clock()
        applied = [event for event, result in zip(events, results, strict=True) if result.status == "applied"]
        if not applied:
            return
        await self.record_receipts(applied, expected_at or {}, now)
        touched = {(event.sku, event.location) for event in applied}
        anomalies = [result.exception for result in results if result.exception is not None]
        await self.check_negative_inventory(now, touched, anomalies)
        await self.check_oversell(now, {event.sku for event in applied})

    async def record_receipts(
        self, events: Sequence[StockEvent], expected: Mapping[str, datetime], now: datetime
    ) -> None:
        """`transfer_out` events with an expected date become expected receipts; `transfer_in` events book
        units in (the one their `reference` names first, then the earliest expected); a receipt fully in
        resolves its delayed_receipt record."""
        if not any(event.event_id in expected or event.type == "transfer_in" for event in events):
            return
        completed: list[str] = []
        async with self.sessions() as session, session.begin():
            for event in events:
                when = expected.get(event.event_id)
                if event.type == "transfer_out" and when is not None and event.to_location:
                    session.add(
                        ExpectedReceipt(
                            event_id=event.event_id,
                            sku=event.sku,
                            from_location=event.location,
                            to_location=event.to_location,
                            reference=event.reference,
                            qty=event.qty,
                            outstanding=event.qty,
                            expected_at=when,
                            created_at=now,
                        )
                    )
                    await session.flush()
                elif event.type == "transfer_in":
                    completed += await _book_in(session, event)
            for key in completed:
                await clear_exception(session, "delayed_receipt", key, now)


async def _book_in(session: AsyncSession, event: StockEvent) -> list[str]:
    """Take a transfer_in's units off the outstanding expected receipts; answers those now complete."""
    open_receipts = list(
        (
            await session.execute(
                select(ExpectedReceipt)
                .where(
                    ExpectedReceipt.sku == event.sku,
                    ExpectedReceipt.to_location == event.location,
                    OUTSTANDING,
                )
                .order_by(ExpectedReceipt.expected_at, ExpectedReceipt.event_id)
            )
        ).scalars()
    )
    named = [r for r in open_receipts if event.reference and event.reference in (r.reference, r.event_id)]
    left = event.qty
    completed = []
    for receipt in named + [r for r in open_receipts if r not in named]:
        if left <= 0:
            break
        taken = min(left, receipt.outstanding)
        receipt.outstanding -= taken
        left -= taken
        if receipt.outstanding == 0:
            completed.append(receipt.event_id)
    return completed
