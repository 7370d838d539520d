"""The sweeper's query of pending cases past their SLA reads the partial index of pending cases by SLA,
on SQLite (which, without statistics, would rather sort every pending case) and on PostgreSQL."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from service.workflow.rounds import due_cases
from tests.workflow.conftest import START

INDEX = "ix_approval_cases_pending_sla_due_at"


async def test_due_cases_read_the_partial_index_of_pending_cases(db_engine: AsyncEngine) -> None:
    query = due_cases(START, 200)
    async with db_engine.connect() as connection:
        compiled = query.compile(connection.sync_connection)
        if db_engine.dialect.name == "sqlite":
            explain = "EXPLAIN QUERY PLAN "
        else:  # an empty table is read whole otherwise
            await connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            explain = "EXPLAIN "
        values = tuple(compiled.construct_params().values())
        rows = (await connection.exec_driver_sql(explain + str(compiled), values)).all()
    plan = " ".join(str(row[-1]) for row in rows)
    assert INDEX in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan  # in SLA order as read
