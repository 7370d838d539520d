"""The PostgreSQL case store: transitions handed over together are written in one statement, each
still all-or-nothing on its own."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from service.db.models import (
    ApprovalCase,
    ApprovalStep,
    AuditEntry,
    ChangeRequest,
    ExceptionRecord,
    OutboxEvent,
)
from service.db.sqlite_writer import SqliteWriter
from service.workflow.store import MAX_BATCH, CaseStore
from service.workflow.writes import Stale, case_binds, for_sqlite, plan, then, write_sqlite
from tests.workflow.conftest import START


async def _seed(engine: AsyncEngine, *ids: str) -> None:
    requests, cases = [], []
    for case_id in ids:
        body = {"sku": "S", "qty": 1, "from_location": "A", "to_location": "B", "requested_by": {"id": "r"}}
        requests.append(
            {
                "id": f"transfer:{case_id}", "kind": "transfer", "request_id": case_id, "fingerprint": "0" * 64,
                "body": body, "requested_by": "r", "decision": {}, "outcome": "route", "case_id": case_id,
                "approval": "any", "shipment_id": None, "created_at": START,
            }
        )  # fmt: skip
        cases.append(
            {
                "id": case_id, "kind": "transfer", "subject": f"transfer:{case_id}", "requested_by": "r",
                "decision_id": case_id, "status": "pending", "approvers": ["store_manager"],
                "approvals_required": 1, "escalation": [], "escalation_level": 0, "sla_hours": None,
                "sla_due_at": None, "created_at": START, "updated_at": START, "closed_at": None,
                "outcome_reason": None, "version": 0,
            }
        )  # fmt: skip
    async with engine.begin() as connection:
        await connection.execute(insert(ChangeRequest), requests)
        await connection.execute(insert(ApprovalCase), cases)


def _approve(store_read: Any, person: str, event_id: str | None = None) -> Any:
    """An approval of the case read; `event_id`: its outbox event's (another's makes it fail: unique)."""
    case, _request, _steps = store_read
    t = plan(
        case, status="approved", action="approved", actor=person, role="store_manager", now=START,
        detail={}, event="case.approved",
    )  # fmt: skip
    if event_id is not None:
        t.events[0]["event_id"] = event_id
    return t


async def _count(engine: AsyncEngine, model: Any, **where: str) -> int:
    query = select(func.count()).select_from(model)
    for name, value in where.items():
        query = query.where(getattr(model, name) == value)
    async with engine.connect() as connection:
        return int((await connection.execute(query)).scalar_one())


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_transitions_of_one_case_handed_over_together_move_it_once(db_engine: AsyncEngine) -> None:
    await _seed(db_engine, "c-1")
    store = CaseStore(db_engine, None)
    read = await store.read("c-1")
    results = await asyncio.gather(
        store.write(_approve(read, "ann")),
        store.write(_approve(read, "bob")),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["NoneType", "Stale"]
    assert await _count(db_engine, ApprovalStep, case_id="c-1") == 1
    assert await _count(db_engine, AuditEntry, subject="transfer:c-1") == 1
    assert await _count(db_engine, OutboxEvent, subject="transfer:c-1") == 1
    case, _request, steps = await store.read("c-1") or pytest.fail("no case")
    assert (case["status"], case["version"]) == ("approved", 1)
    assert [s.action for s in steps] == ["approved"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_transition_that_fails_fails_alone_and_writes_nothing(db_engine: AsyncEngine) -> None:
    await _seed(db_engine, "c-1", "c-2", "c-3")
    store = CaseStore(db_engine, None)
    reads = await asyncio.gather(*(store.read(c) for c in ("c-1", "c-2", "c-3")))
    # c-2's outbox event has c-1's id: the unique event id fails its statement
    results = await asyncio.gather(
        *(store.write(_approve(r, "ann", e)) for r, e in zip(reads, ("e-1", "e-1", "e-3"), strict=True)),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert not isinstance(results[1], Stale) and isinstance(results[1], Exception)
    assert await _count(db_engine, ApprovalStep, case_id="c-2") == 0
    assert await _count(db_engine, AuditEntry, subject="transfer:c-2") == 0
    assert await _count(db_engine, OutboxEvent, subject="transfer:c-2") == 0
    case, _request, _steps = await store.read("c-2") or pytest.fail("no case")
    assert (case["status"], case["version"]) == ("pending", 0)
    for case_id in ("c-1", "c-3"):
        assert await _count(db_engine, ApprovalStep, case_id=case_id) == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_transitions_of_other_shapes_written_together_each_get_their_own_answer(
    db_engine: AsyncEngine,
) -> None:
    """A statement holds its transitions grouped by shape, not in the order handed over: each answer is
    still its own transition's (here a rejection named at a version its case is not at, handed over
    first, between two approvals)."""
    await _seed(db_engine, "c-1", "c-2", "c-3")
    store = CaseStore(db_engine, None)
    one, two, three = await asyncio.gather(*(store.read(c) for c in ("c-1", "c-2", "c-3")))
    moved_on = {**two[0], "version": 7}
    reject = plan(
        moved_on, status="rejected", action="rejected", actor="ann", role="store_manager", now=START,
        detail={}, event="case.rejected", comment="no", changes={"outcome_reason": "no"},
    )  # fmt: skip
    results = await asyncio.gather(
        store.write(reject),
        store.write(_approve(one, "ann")),
        store.write(_approve(three, "ann")),
        return_exceptions=True,
    )
    assert isinstance(results[0], Stale) and results[1:] == [None, None]
    assert await _count(db_engine, ApprovalStep, case_id="c-2") == 0
    for case_id in ("c-1", "c-3"):
        case, _request, _steps = await store.read(case_id) or pytest.fail("no case")
        assert case["status"] == "approved"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_an_unknown_case_reads_as_none_beside_known_ones(db_engine: AsyncEngine) -> None:
    await _seed(db_engine, "c-1")
    store = CaseStore(db_engine, None)
    known, unknown = await asyncio.gather(store.read("c-1"), store.read("nope"))
    assert unknown is None and known is not None and known[0]["id"] == "c-1"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_connection_the_server_dropped_fails_once_then_is_replaced(db_engine: AsyncEngine) -> None:
    await _seed(db_engine, "c-1")
    # a pool of one connection, so the backend to end is known (other sessions' connections are left alone)
    engine = create_async_engine(db_engine.url, pool_size=1, max_overflow=0)
    other = create_async_engine(db_engine.url, poolclass=NullPool)
    store = CaseStore(engine, None)
    try:
        assert await store.read("c-1") is not None  # the pool now holds its connection
        async with engine.connect() as connection:
            pid = (await connection.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
        async with other.connect() as connection:
            ended = await connection.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
            assert ended.scalar_one() is True
        with pytest.raises(ConnectionError):
            await store.read("c-1")
        assert await store.read("c-1") is not None
    finally:
        await other.dispose()
        await engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_transitions_written_together_fall_back_one_by_one_when_one_fails(
    db_engine: AsyncEngine,
) -> None:
    await _seed(db_engine, "c-1", "c-2", "c-3", "c-4")
    store = CaseStore(db_engine, db_engine.url.database)
    reads = [await store.read(c) for c in ("c-1", "c-2", "c-3", "c-4")]
    stale = plan(
        reads[3][0] | {"version": 7}, status="rejected", action="rejected", actor="ann", role="store_manager",
        now=START, detail={}, event="case.rejected",
    )  # fmt: skip
    transitions = [_approve(r, "ann", e) for r, e in zip(reads[:3], ("e-1", "e-1", "e-3"), strict=True)]
    binds = case_binds(db_engine.dialect)
    batch = [for_sqlite(t, binds) for t in [*transitions, stale]]
    path = db_engine.url.database or pytest.fail("no file")
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        # c-2's outbox event has c-1's id: the unique event id fails the batch, then c-2 alone
        results = write_sqlite(connection, batch)
        connection.execute("COMMIT")
    finally:
        connection.close()
    assert results[0] is True and results[2] is True and results[3] is False
    assert isinstance(results[1], sqlite3.IntegrityError)
    for case_id, written in (("c-1", 1), ("c-2", 0), ("c-3", 1), ("c-4", 0)):
        assert await _count(db_engine, ApprovalStep, case_id=case_id) == written
        assert await _count(db_engine, AuditEntry, subject=f"transfer:{case_id}") == written
        assert await _count(db_engine, OutboxEvent, subject=f"transfer:{case_id}") == written
    case, _request, _steps = await store.read("c-2") or pytest.fail("no case")
    assert (case["status"], case["version"]) == ("pending", 0)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_transitions_written_together_write_each_once(db_engine: AsyncEngine) -> None:
    await _seed(db_engine, "c-1", "c-2")
    store = CaseStore(db_engine, db_engine.url.database)
    reads = [await store.read(c) for c in ("c-1", "c-2")]
    binds = case_binds(db_engine.dialect)
    batch = [for_sqlite(_approve(r, "ann"), binds) for r in reads]
    connection = sqlite3.connect(db_engine.url.database or pytest.fail("no file"), isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        assert write_sqlite(connection, batch) == [True, True]
        connection.execute("COMMIT")
    finally:
        connection.close()
    for case_id in ("c-1", "c-2"):
        assert await _count(db_engine, ApprovalStep, case_id=case_id) == 1
        assert await _count(db_engine, OutboxEvent, subject=f"transfer:{case_id}") == 1
        case, _request, _steps = await store.read(case_id) or pytest.fail("no case")
        assert (case["status"], case["version"]) == ("approved", 1)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_reads_go_on_the_writers_connection_or_else_on_the_stores_own(
    db_engine: AsyncEngine, tmp_path: Any
) -> None:
    await _seed(db_engine, "c-1")
    path = db_engine.url.database or pytest.fail("no file")
    store = CaseStore(db_engine, path, SqliteWriter(path))
    assert await store.read("c-1") is not None and store._reader is None
    # a writer whose connection cannot read the case (here: another file, without the table)
    store = CaseStore(db_engine, path, SqliteWriter(str(tmp_path / "other.db")))
    case, _request, _steps = await store.read("c-1") or pytest.fail("no case")
    assert case["id"] == "c-1" and store._reader is not None
    store.close()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_two_transitions_joined_write_once_with_every_step_audit_row_and_event_in_order(
    db_engine: AsyncEngine,
) -> None:
    await _seed(db_engine, "c-1")
    sqlite_file = db_engine.url.database if db_engine.dialect.name == "sqlite" else None
    store = CaseStore(db_engine, sqlite_file)
    approved = _approve(await store.read("c-1"), "ann")
    executed = plan(
        approved.after, status="executed", action="executed", actor="workflow", now=START,
        detail={"n": 2}, event="case.executed", extra_events=[("transfer.shipped", {"n": 3})],
    )  # fmt: skip
    joined = then(approved, executed)
    if sqlite_file is None:
        await store.write(joined)
    else:
        connection = sqlite3.connect(sqlite_file, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            assert write_sqlite(connection, [for_sqlite(joined, case_binds(db_engine.dialect))]) == [True]
            connection.execute("COMMIT")
        finally:
            connection.close()
    case, _request, steps = await store.read("c-1") or pytest.fail("no case")
    assert (case["status"], case["version"]) == ("executed", 2)
    assert [s.action for s in steps] == ["approved", "executed"]
    async with db_engine.connect() as connection:
        audits = (await connection.execute(select(AuditEntry.action).order_by(AuditEntry.id))).scalars()
        events = (await connection.execute(select(OutboxEvent.kind).order_by(OutboxEvent.id))).scalars()
        assert list(audits) == ["case.approved", "case.executed"]
        assert list(events) == ["case.approved", "case.executed", "transfer.shipped"]
    store.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_batches_that_follow_one_another_share_one_checkout_given_back_once_none_waits(
    db_engine: AsyncEngine,
) -> None:
    """A batch's connection goes on to the batch waiting after it instead of back to the pool and out
    again; once none waits it is back in the pool (here reads, then writes, of one batch and a bit)."""
    ids = [f"c-{i}" for i in range(MAX_BATCH + 10)]
    await _seed(db_engine, *ids)
    engine = create_async_engine(db_engine.url, pool_size=2, max_overflow=0)
    checkouts: list[object] = []
    event.listen(engine.sync_engine, "checkout", lambda *args: checkouts.append(args))
    store = CaseStore(engine, None)
    try:
        reads = await asyncio.gather(*(store.read(c) for c in ids))
        assert (len(checkouts), engine.pool.checkedout()) == (1, 0)
        await asyncio.gather(*(store.write(_approve(r, "ann")) for r in reads))
        assert (len(checkouts), engine.pool.checkedout()) == (2, 0)
    finally:
        await engine.dispose()
    assert await _count(db_engine, ApprovalStep) == len(ids)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_reads_of_few_cases_run_on_one_generic_plan_not_planned_each_time(
    db_engine: AsyncEngine,
) -> None:
    """PostgreSQL plans a prepared statement afresh while a plan for the values given looks cheaper than
    its generic plan; the read's estimate does not depend on the ids, so after its first executions the
    read runs on its generic plan (here ten reads of one or two cases on a pool of one)."""
    await _seed(db_engine, "c-1", "c-2")
    engine = create_async_engine(db_engine.url, pool_size=1, max_overflow=0)
    store = CaseStore(engine, None)
    try:
        for i in range(10):
            await asyncio.gather(*(store.read(c) for c in ("c-1", "c-2")[: 1 + i % 2]))
        generic, custom = await _plans(engine, "SELECT c.id, %")
        assert generic >= 5 and custom <= 5
    finally:
        await engine.dispose()


async def _plans(engine: AsyncEngine, statement: str) -> tuple[int, int]:
    """How many times the pool's connection ran its prepared statement `statement` (a LIKE pattern) on
    its generic plan and on a plan of its own."""
    async with engine.connect() as connection:
        plans = await connection.execute(
            text("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE :s"),
            {"s": statement},
        )
        generic, custom = plans.one()
    return int(generic), int(custom)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_writes_of_few_cases_run_on_one_generic_plan_not_planned_each_time(
    db_engine: AsyncEngine,
) -> None:
    """As the read: the write's estimate does not depend on its rows, so after its first executions
    it runs on its generic plan (here ten batches of one or two approvals on a pool of one, among cases
    enough for the plan for a few rows to look cheaper than the generic one)."""
    ids = [f"c-{i}" for i in range(15)]
    await _seed(db_engine, *ids)
    async with db_engine.begin() as connection:
        await connection.exec_driver_sql(
            "INSERT INTO approval_cases SELECT 'other-' || i, kind, subject, requested_by, decision_id, "
            "'executed', approvers, approvals_required, escalation, escalation_level, sla_hours, sla_due_at, "
            "created_at, updated_at, closed_at, outcome_reason, version "
            "FROM approval_cases, generate_series(1, 20000) AS i WHERE id = 'c-0'"
        )
        await connection.exec_driver_sql("ANALYZE approval_cases")
    engine = create_async_engine(db_engine.url, pool_size=1, max_overflow=0)
    store = CaseStore(engine, None)
    try:
        reads = await asyncio.gather(*(store.read(c) for c in ids))
        sizes = [1, 2] * 5
        for i, size in enumerate(sizes):
            start = sum(sizes[:i])
            await asyncio.gather(*(store.write(_approve(r, "ann")) for r in reads[start : start + size]))
        generic, custom = await _plans(engine, "WITH c_moved_0 %")
        assert generic >= 5 and custom <= 5
    finally:
        await engine.dispose()
    assert await _count(db_engine, ApprovalStep) == len(ids)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_batches_of_one_shape_and_any_size_share_one_prepared_statement(db_engine: AsyncEngine) -> None:
    """A batch's rows go as arrays: its statement's text is its shape's, whatever the number of transitions,
    so a connection prepares it once (here a batch of two, then one of three, on a pool of one)."""
    ids = [f"c-{i}" for i in range(5)]
    await _seed(db_engine, *ids)
    engine = create_async_engine(db_engine.url, pool_size=1, max_overflow=0)
    store = CaseStore(engine, None)
    try:
        reads = await asyncio.gather(*(store.read(c) for c in ids))
        await asyncio.gather(*(store.write(_approve(r, "ann")) for r in reads[:2]))
        await asyncio.gather(*(store.write(_approve(r, "ann")) for r in reads[2:]))
        async with engine.connect() as connection:
            prepared = await connection.exec_driver_sql(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'WITH %INTO approval_steps%'"
            )
            assert prepared.scalar_one() == 1
    finally:
        await engine.dispose()
    for case_id in ids:
        assert await _count(db_engine, ApprovalStep, case_id=case_id) == 1
        assert await _count(db_engine, OutboxEvent, subject=f"transfer:{case_id}") == 1


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_cases_approved_together_each_resolve_their_own_stuck_approval_exception(
    db_engine: AsyncEngine,
) -> None:
    await _seed(db_engine, "c-1", "c-2", "c-3")
    records = [
        {
            "id": f"x-{case_id}", "kind": "stuck_approval", "key": case_id, "state": "open", "location": None,
            "sku": None, "detail": {}, "opened_at": START, "updated_at": START,
        }
        for case_id in ("c-1", "c-2")
    ]  # fmt: skip
    async with db_engine.begin() as connection:
        await connection.execute(insert(ExceptionRecord), records)
    store = CaseStore(db_engine, None)
    reads = await asyncio.gather(*(store.read(c) for c in ("c-1", "c-2", "c-3")))
    for case, _request, _steps in reads:
        case["sla_due_at"] = START  # due: each may be stuck (c-3 has no exception)
    await asyncio.gather(*(store.write(_approve(r, "ann")) for r in reads))
    async with db_engine.connect() as connection:
        states = (await connection.execute(select(ExceptionRecord.key, ExceptionRecord.state))).all()
        resolved = (
            await connection.execute(
                select(OutboxEvent.subject, OutboxEvent.payload).where(
                    OutboxEvent.kind == "exception.resolved"
                )
            )
        ).all()
    assert sorted(states) == [("c-1", "resolved"), ("c-2", "resolved")]
    told = {subject: payload["exception"]["key"] for subject, payload in resolved}
    assert told == {"exception:x-c-1": "c-1", "exception:x-c-2": "c-2"}


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_a_case_reads_as_the_orm_reads_it_with_its_request_and_steps_in_order(
    db_engine: AsyncEngine,
) -> None:
    """Every column as the ORM reads it: a float of 17 digits, JSON numbers as written, times in UTC
    (stored with an offset or without), nulls, and the steps in id order."""
    await _seed(db_engine, "c-1")
    due = START.replace(microsecond=123456)
    odd = {"ratio": 0.30000000000000004, "big": 12345678901234567890, "name": "é", "none": None}
    async with db_engine.begin() as connection:
        await connection.execute(
            ApprovalCase.__table__.update().where(ApprovalCase.id == "c-1").values(
                sla_hours=0.30000000000000004, sla_due_at=due, approvers=["a", "b"], escalation=["x"],
                outcome_reason="why",
            )
        )  # fmt: skip
        await connection.execute(
            insert(ApprovalStep),
            [
                {"case_id": "c-1", "at": START, "action": a, "actor": "ann", "role": r, "comment": c,
                 "detail": d}
                for a, r, c, d in (("opened", None, None, {}), ("approved", "m", "ok", odd), ("x", "m", None, [1]))
            ],
        )  # fmt: skip
    store = CaseStore(db_engine, db_engine.url.database if db_engine.dialect.name == "sqlite" else None)
    case, request, steps = await store.read("c-1") or pytest.fail("no case")
    store.close()
    async with db_engine.connect() as connection:
        row = (await connection.execute(select(ApprovalCase.__table__).where(ApprovalCase.id == "c-1"))).one()
        orm_steps = (await connection.execute(select(ApprovalStep.__table__).order_by(ApprovalStep.id))).all()
        body = (await connection.execute(select(ChangeRequest.body))).scalar_one()
    expected = {
        k: v.replace(tzinfo=v.tzinfo or UTC) if isinstance(v, datetime) else v
        for k, v in row._mapping.items()
    }
    assert case == expected
    assert case["sla_hours"] == 0.30000000000000004 and case["sla_due_at"] == due
    assert request is not None and (request.id, request.body, request.shipment_id) == (
        "transfer:c-1",
        body,
        None,
    )
    assert [(s.id, s.action, s.role, s.comment, s.detail, s.at) for s in steps] == [
        (s.id, s.action, s.role, s.comment, s.detail, START) for s in orm_steps
    ]
    assert steps[1].detail == odd
