"""The sweeper's query of pending cases past their SLA reads the partial index of pending cases by SLA,
on SQLite (which, without statistics, would rather sort every pending case) and on PostgreSQL; an inbox
by role reads the roles table's key, which is in inbox order."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.workflow.inbox import inbox_query
from service.workflow.rounds import due_cases
from tests.workflow.conftest import START

INDEX = "ix_approval_cases_pending_sla_due_at"


async def _plan(engine: AsyncEngine, query: Any) -> str:
    async with engine.connect() as connection:
        compiled = query.compile(connection.sync_connection)
        if engine.dialect.name == "sqlite":
            explain = "EXPLAIN QUERY PLAN "
        else:  # an empty table is read whole otherwise
            await connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            explain = "EXPLAIN "
        values = tuple(compiled.construct_params().values())
        rows = (await connection.exec_driver_sql(explain + str(compiled), values)).all()
    return " ".join(str(row[-1]) for row in rows)


async def test_due_cases_read_the_partial_index_of_pending_cases(db_engine: AsyncEngine) -> None:
    plan = await _plan(db_engine, due_cases(START, 200))
    assert INDEX in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan  # in SLA order as read


ROLES_KEY = "pk_approval_case_roles"
AFTER = (START, "c-0001")


@pytest.mark.parametrize(
    ("kind", "overdue", "after"),
    [(None, None, None), ("transfer", None, AFTER), (None, True, None)],
    ids=["first page", "by kind, a later page", "overdue"],
)
async def test_an_inbox_by_role_reads_the_roles_key_in_inbox_order(
    db_engine: AsyncEngine, kind: str | None, overdue: bool | None, after: tuple[datetime, str] | None
) -> None:
    plan = await _plan(db_engine, inbox_query("store_manager", "pending", overdue, kind, after, START, 51))
    if db_engine.dialect.name == "sqlite":  # the table is its key's b-tree
        assert "SEARCH approval_case_roles USING PRIMARY KEY (role=? AND status=?" in plan, plan
    else:
        assert ROLES_KEY in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan  # in inbox order as read


async def test_a_later_page_of_an_inbox_by_role_starts_at_its_cursor_in_the_roles_key(
    db_engine: AsyncEngine,
) -> None:
    """On 20,000 pending cases of a role with no statistics gathered, a later page reads the roles key from
    the cursor on (a row comparison): PostgreSQL walked the role's entries from its first case for the
    cursor's `created_at > ? OR (created_at = ? AND case_id > ?)`."""
    async with db_engine.begin() as connection:
        await connection.execute(
            text(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)"
                " INSERT INTO approval_case_roles (case_id, role, status, kind, created_at)"
                " SELECT 'c-' || i, 'store_manager', 'pending', 'transfer', :at FROM n"
            ).bindparams(bindparam("at", START, type_=DateTime(timezone=True)))
        )
    query = inbox_query("store_manager", "pending", None, None, (START, "c-19000"), START, 51)
    async with db_engine.connect() as connection:
        compiled = query.compile(connection.sync_connection)
        explain = "EXPLAIN QUERY PLAN " if db_engine.dialect.name == "sqlite" else "EXPLAIN "
        values = tuple(compiled.construct_params().values())
        plan = [str(row[-1]) for row in await connection.exec_driver_sql(explain + str(compiled), values)]
    if db_engine.dialect.name == "sqlite":
        assert any(
            "USING PRIMARY KEY (role=? AND status=? AND (created_at,case_id)>(?,?))" in line for line in plan
        ), plan
    else:
        conditions = [line for line in plan if "Index Cond" in line]
        assert any("created_at" in line and "case_id" in line for line in conditions), "\n".join(plan)
