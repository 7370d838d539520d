"""The inbox index of cases by role (`approval_case_roles`, keyed in inbox order): a case's rows are
found by their keys, read from the case, on every way a transition is written (the SQLite file's writer,
the PostgreSQL statement, a session), whichever way the rows were written before."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.engine import session_factory
from service.db.models import ApprovalCaseRole
from service.workflow.store import CaseStore
from service.workflow.writes import (
    Transition,
    case_binds,
    for_sqlite,
    plan,
    role_rows,
    write_in_session,
    write_sqlite,
)
from tests.workflow.conftest import START
from tests.workflow.test_case_store import _seed

BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


async def _roles(engine: AsyncEngine) -> list[tuple[str, str]]:
    query = select(ApprovalCaseRole.case_id, ApprovalCaseRole.role).order_by(
        ApprovalCaseRole.case_id, ApprovalCaseRole.role
    )
    async with engine.connect() as connection:
        return [(row[0], row[1]) for row in (await connection.execute(query)).all()]


async def _opened(engine: AsyncEngine, *ids: str) -> CaseStore:
    """Pending cases with their role rows as opening a case writes them (through SQLAlchemy)."""
    await _seed(engine, *ids)
    store = CaseStore(engine, engine.url.database if engine.dialect.name == "sqlite" else None)
    for case_id in ids:
        case, _request, _steps = await store.read(case_id) or pytest.fail("no case")
        async with engine.begin() as connection:
            await connection.execute(insert(ApprovalCaseRole), role_rows(case))
    return store


async def _by_writer(engine: AsyncEngine, store: CaseStore, t: Transition) -> None:
    """`t` written as an approver's transition is: by the SQLite file's writer, or in one statement."""
    if engine.dialect.name == "postgresql":
        await store.write(t)
        return
    connection = sqlite3.connect(engine.url.database or pytest.fail("no file"), isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        assert write_sqlite(connection, [for_sqlite(t, case_binds(engine.dialect))]) == [True]
        connection.execute("COMMIT")
    finally:
        connection.close()


async def _in_session(engine: AsyncEngine, t: Transition) -> None:
    async with session_factory(engine).begin() as session:
        await write_in_session(session, t)


def _approved(case: dict[str, Any]) -> Transition:
    return plan(
        case, status="approved", action="approved", actor="ann", role="store_manager", now=START,
        detail={}, event="case.approved",
    )  # fmt: skip


def _escalated(case: dict[str, Any], role: str) -> Transition:
    return plan(
        case, status="pending", action="escalated", actor="workflow", now=START, detail={},
        event="case.escalated", changes={"approvers": [role], "sla_due_at": START + timedelta(hours=4)},
    )  # fmt: skip


@BOTH
async def test_a_case_leaving_pending_leaves_the_inbox_and_others_stay(db_engine: AsyncEngine) -> None:
    store = await _opened(db_engine, "c-1", "c-2")
    case, _request, _steps = await store.read("c-1") or pytest.fail("no case")
    await _by_writer(db_engine, store, _approved(case))
    assert await _roles(db_engine) == [("c-2", "store_manager")]


@BOTH
async def test_a_case_leaving_pending_through_a_session_leaves_the_inbox(db_engine: AsyncEngine) -> None:
    store = await _opened(db_engine, "c-1", "c-2")
    case, _request, _steps = await store.read("c-2") or pytest.fail("no case")
    await _in_session(db_engine, _approved(case))
    assert await _roles(db_engine) == [("c-1", "store_manager")]


@BOTH
async def test_an_escalation_replaces_the_roles_and_the_next_transition_finds_them(
    db_engine: AsyncEngine,
) -> None:
    store = await _opened(db_engine, "c-1")
    case, _request, _steps = await store.read("c-1") or pytest.fail("no case")
    await _in_session(db_engine, _escalated(case, "district_manager"))
    assert await _roles(db_engine) == [("c-1", "district_manager")]
    case, _request, _steps = await store.read("c-1") or pytest.fail("no case")
    await _by_writer(db_engine, store, _approved(case))
    assert await _roles(db_engine) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_role_rows_the_sqlite_writer_adds_are_found_by_a_session_and_the_inbox(
    db_engine: AsyncEngine,
) -> None:
    """The writer writes the key's time as SQLAlchemy does (here a time with no fraction, which the
    driver's own adapter would write otherwise)."""
    store = await _opened(db_engine, "c-1")
    case, _request, _steps = await store.read("c-1") or pytest.fail("no case")
    await _by_writer(db_engine, store, _escalated(case, "district_manager"))
    found = select(ApprovalCaseRole.case_id).where(
        ApprovalCaseRole.role == "district_manager",
        ApprovalCaseRole.status == "pending",
        ApprovalCaseRole.created_at == START,
    )
    async with db_engine.connect() as connection:
        assert (await connection.execute(found)).scalars().all() == ["c-1"]
    case, _request, _steps = await store.read("c-1") or pytest.fail("no case")
    await _in_session(db_engine, _approved(case))
    assert await _roles(db_engine) == []


@BOTH
async def test_the_migration_keeps_every_row_in_the_form_the_key_is_matched_in(
    db_engine: AsyncEngine,
) -> None:
    """Rows an earlier version wrote (on SQLite in either text form of a time) are found by their keys
    after migration 0022, and its downgrade keeps them."""
    from service.db.migrate import downgrade, upgrade

    await downgrade(db_engine, "0021_case_indexes")
    rows = [("c-1", "2026-03-02 09:00:00+00:00"), ("c-2", "2026-03-02 09:00:00.250000+00:00")]
    rows.append(("c-3", "2026-03-02 09:00:00.500000"))
    async with db_engine.begin() as connection:
        for case_id, text in rows:
            at = text if db_engine.dialect.name == "sqlite" else datetime.fromisoformat(text)
            await connection.exec_driver_sql(
                "INSERT INTO approval_case_roles (case_id, role, status, kind, created_at) VALUES "
                + ("(?, ?, ?, ?, ?)" if db_engine.dialect.name == "sqlite" else "($1, $2, $3, $4, $5)"),
                (case_id, "store_manager", "pending", "transfer", at),
            )
    await upgrade(db_engine)
    await downgrade(db_engine, "0021_case_indexes")
    await upgrade(db_engine)
    found = select(ApprovalCaseRole.case_id).where(
        ApprovalCaseRole.role == "store_manager",
        ApprovalCaseRole.status == "pending",
        ApprovalCaseRole.created_at.in_([START, START + timedelta(microseconds=250_000)]),
    )
    async with db_engine.connect() as connection:
        assert sorted((await connection.execute(found)).scalars()) == ["c-1", "c-2"]
    assert [case_id for case_id, _role in await _roles(db_engine)] == ["c-1", "c-2", "c-3"]
