"""Exception records: one per condition while it lasts (under racing raisers too), people's transitions,
and the checks that open and resolve stuck approvals and delayed receipts as the data changes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.models import ApprovalCase, ExceptionRecord, OutboxEvent
from service.stock import SnapshotRow, StockEvent, open_store
from service.workflow.exceptions import (
    ExceptionStateError,
    acknowledge,
    clear_exception,
    raise_exception,
    resolve,
)
from service.workflow.monitor import ExceptionMonitor
from tests.apiclient import make_settings
from tests.workflow.conftest import Clock

Sessions = async_sessionmaker[AsyncSession]


async def records(sessions: Sessions, kind: str | None = None) -> list[ExceptionRecord]:
    async with sessions() as session:
        query = select(ExceptionRecord).order_by(ExceptionRecord.id)
        if kind is not None:
            query = query.where(ExceptionRecord.kind == kind)
        return list((await session.execute(query)).scalars())


async def events_of(sessions: Sessions, kind: str) -> int:
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.kind == kind)
        )
        return int(count or 0)


async def raise_in_own_transaction(sessions: Sessions, clock: Clock, key: str = "TEE@S1") -> None:
    async with sessions() as session, session.begin():
        await raise_exception(
            session, "negative_inventory", key, location="S1", sku="TEE", detail={"shortfall": 2}, now=clock()
        )


async def test_racing_raisers_open_one_record_per_condition(sessions: Sessions, clock: Clock) -> None:
    await asyncio.gather(*(raise_in_own_transaction(sessions, clock) for _ in range(12)))
    [record] = await records(sessions)
    assert (record.kind, record.key, record.state, record.location) == (
        "negative_inventory",
        "TEE@S1",
        "open",
        "S1",
    )
    assert await events_of(sessions, "exception.opened") == 1


async def test_a_cleared_condition_that_comes_back_opens_a_new_record(
    sessions: Sessions, clock: Clock
) -> None:
    await raise_in_own_transaction(sessions, clock)
    async with sessions() as session, session.begin():
        await clear_exception(session, "negative_inventory", "TEE@S1", clock.advance(minutes=5))
    await raise_in_own_transaction(sessions, clock)
    first, second = await records(sessions)
    assert (first.state, first.resolved_by, second.state) == ("resolved", "system", "open")
    assert await events_of(sessions, "exception.resolved") == 1


async def test_people_acknowledge_then_resolve_and_cannot_acknowledge_a_resolved_one(
    sessions: Sessions, clock: Clock
) -> None:
    await raise_in_own_transaction(sessions, clock)
    [record] = await records(sessions)
    async with sessions() as session, session.begin():
        acked = await acknowledge(
            session, record.id, actor="ana", assignee="store-S1", comment="counting", now=clock()
        )
    assert (acked.state, acked.assignee, acked.comment) == ("acknowledged", "store-S1", "counting")
    async with sessions() as session, session.begin():
        done = await resolve(session, record.id, actor="ana", assignee=None, comment="recounted", now=clock())
    assert (done.state, done.resolved_by, done.assignee) == ("resolved", "ana", "store-S1")
    async with sessions() as session, session.begin():
        with pytest.raises(ExceptionStateError):
            await acknowledge(session, record.id, actor="bo", assignee=None, comment=None, now=clock())
    [record] = await records(sessions)
    assert record.state == "resolved"


def case(case_id: str, clock: Clock, *, due_in_hours: float, status: str = "pending") -> ApprovalCase:
    return ApprovalCase(
        id=case_id,
        kind="transfer",
        subject=f"transfer:{case_id}",
        requested_by="sam",
        decision_id="d-" + case_id,
        status=status,
        approvers=["regional_manager"],
        approvals_required=1,
        escalation=[],
        escalation_level=0,
        sla_hours=4,
        sla_due_at=clock() + timedelta(hours=due_in_hours),
        created_at=clock(),
        updated_at=clock(),
        version=0,
    )


async def test_a_pending_case_past_its_sla_is_a_stuck_approval_until_it_closes(
    sessions: Sessions, clock: Clock
) -> None:
    async with sessions() as session, session.begin():
        session.add_all([case("t-1", clock, due_in_hours=4), case("t-2", clock, due_in_hours=8)])
    monitor = ExceptionMonitor(sessions, None, clock=clock)
    await monitor.check()
    assert await records(sessions) == []
    clock.advance(hours=5)
    await monitor.check()
    [stuck] = await records(sessions, "stuck_approval")
    assert (stuck.key, stuck.state, stuck.detail["subject"]) == ("t-1", "open", "transfer:t-1")
    await monitor.check()  # still stuck: still one record
    assert len(await records(sessions)) == 1

    async with sessions() as session, session.begin():
        row = await session.get(ApprovalCase, "t-1")
        assert row is not None
        row.status, row.closed_at = "approved", clock()
    await monitor.check()
    [stuck] = await records(sessions, "stuck_approval")
    assert (stuck.state, stuck.resolved_by) == ("resolved", "system")


async def test_a_transfer_not_in_by_its_expected_date_is_a_delayed_receipt_until_booked_in(
    sessions: Sessions, clock: Clock
) -> None:
    monitor = ExceptionMonitor(sessions, None, clock=clock)
    shipped = StockEvent("out-1", "transfer_out", "TEE", "DC1", 10, to_location="S1", reference="t-77")
    await monitor.record_receipts([shipped], {"out-1": clock() + timedelta(days=2)}, clock())
    await monitor.check()
    assert await records(sessions) == []
    clock.advance(days=3)
    await monitor.check()
    [late] = await records(sessions, "delayed_receipt")
    assert (late.key, late.location, late.sku, late.detail["outstanding"]) == ("out-1", "S1", "TEE", 10)

    partly = StockEvent("in-1", "transfer_in", "TEE", "S1", 6, reference="t-77")
    await monitor.record_receipts([partly], {}, clock())
    await monitor.check()
    [late] = await records(sessions, "delayed_receipt")
    assert late.state == "open"  # four units are still on their way
    rest = StockEvent("in-2", "transfer_in", "TEE", "S1", 4)
    await monitor.record_receipts([rest], {}, clock())
    [late] = await records(sessions, "delayed_receipt")
    assert (late.state, late.resolved_by) == (
        "resolved",
        "system",
    )  # resolved at booking, not at the next check


async def test_the_periodic_check_sees_negative_stock_written_past_the_endpoint_and_its_recovery(
    database_url: str, sessions: Sessions, clock: Clock
) -> None:
    """Stock moved by another writer than the stock endpoint (a transfer's execution, a CLI import) has no
    hook: the periodic check opens the record from the store's anomaly and resolves it from live levels."""
    store = await open_store(make_settings(database_url))
    try:
        await store.put_snapshot([SnapshotRow("TEE", "S1", 1)])
        await store.apply_events([StockEvent("pos-1", "sale", "TEE", "S1", 4)])
        monitor = ExceptionMonitor(sessions, store, clock=clock)
        await monitor.check()
        [record] = await records(sessions, "negative_inventory")
        assert (record.key, record.state, record.detail["shortfall"], record.detail["sellable"]) == (
            "TEE@S1",
            "open",
            3,
            -3,
        )
        await store.apply_events([StockEvent("count-1", "adjustment", "TEE", "S1", 2)])
        await monitor.check()
        [record] = await records(sessions, "negative_inventory")
        assert (record.state, record.resolved_by) == ("resolved", "system")
        await monitor.check()  # the anomaly is still in the store's record, the condition is not
        assert len(await records(sessions, "negative_inventory")) == 1
    finally:
        await store.close()
