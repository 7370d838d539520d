"""Reads on a periodic or a per-request path stay with the rows they are about on a large table with no
statistics gathered (PostgreSQL with autovacuum off or not run yet, SQLite never analyzed): the plans of
the statements the code runs name the index that holds just those rows, and read no table whole."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from sqlalchemy import DateTime, bindparam, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.stock import StockEvent
from service.workflow.monitor import ExceptionMonitor
from service.workflow.recovery import MoveRecovery
from tests.workflow.conftest import Clock

Sessions = async_sessionmaker[AsyncSession]
Statements = list[tuple[str, object]]
ROWS = 20_000  # enough that a read of the whole table, or of an index's every entry, shows


async def fill(engine: AsyncEngine, insert: str, at: datetime) -> None:
    """Run `INSERT ... SELECT ... FROM n` over n(i) = 1 .. ROWS, with `:at` a time in the column's form."""
    numbers = f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) "
    statement = text(numbers + insert).bindparams(bindparam("at", at, type_=DateTime(timezone=True)))
    async with engine.begin() as connection:
        await connection.execute(statement)


@contextmanager
def captured(engine: AsyncEngine, table: str) -> Iterator[Statements]:
    """The SELECTs from `table` run meanwhile, with their parameters."""
    statements: Statements = []

    def seen(_conn: object, _cursor: object, statement: str, parameters: object, *_: object) -> None:
        if statement.lstrip().startswith(("SELECT", "WITH")) and f"FROM {table}" in statement:
            statements.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)


async def plans(engine: AsyncEngine, statements: Statements) -> list[str]:
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    async with engine.connect() as connection:
        return [
            "\n".join(
                str(row[-1]) for row in await connection.exec_driver_sql(explain + statement, parameters)
            )
            for statement, parameters in statements
        ]


CASES = (
    "INSERT INTO approval_cases (id, kind, subject, requested_by, decision_id, status, approvers,"
    " approvals_required, escalation, escalation_level, created_at, updated_at, version)"
    " SELECT 'old-' || i, 'transfer', 's', 'u', 'd', 'executed', '[]', 1, '[]', 0, :at, :at, 1 FROM n"
)


async def test_the_moves_recovery_reads_only_the_transfers_executed_since_its_last_round(
    sessions: Sessions, db_engine: AsyncEngine, clock: Clock
) -> None:
    await fill(db_engine, CASES, clock() - timedelta(days=2))  # executed long ago, never received
    recovery = MoveRecovery(
        lambda: sessions, lambda: None, grace=timedelta(minutes=1), lookback=timedelta(hours=1)
    )
    with captured(db_engine, "approval_cases") as statements:
        assert await recovery.round(clock()) == 0
    assert len(statements) == 1
    for plan in await plans(db_engine, statements):
        assert "ix_approval_cases_executed_transfers" in plan, plan


RECEIPTS = (
    "INSERT INTO expected_receipts (event_id, sku, from_location, to_location, reference, qty, outstanding,"
    " expected_at, created_at) SELECT 'in-long-ago-' || i, 'TEE', 'DC1', 'S1', NULL, 5, 0, :at, :at FROM n"
)


async def test_the_delayed_receipt_check_and_a_booking_read_only_receipts_with_units_to_come(
    sessions: Sessions, db_engine: AsyncEngine, clock: Clock
) -> None:
    await fill(db_engine, RECEIPTS, clock() - timedelta(days=30))  # fully in long ago, at the same place
    monitor = ExceptionMonitor(sessions, None, clock=clock)
    shipped = StockEvent("out-1", "transfer_out", "TEE", "DC1", 10, to_location="S1", reference="t-77")
    await monitor.record_receipts([shipped], {"out-1": clock() + timedelta(days=1)}, clock())
    clock.advance(days=2)
    with captured(db_engine, "expected_receipts") as statements:
        await monitor.check_delayed_receipts(clock())
        arrived = StockEvent("in-1", "transfer_in", "TEE", "S1", 10, reference="t-77")
        await monitor.record_receipts([arrived], {}, clock())
    assert len(statements) == 2  # the check's read, the booking's
    for plan in await plans(db_engine, statements):
        assert "ix_expected_receipts_outstanding_" in plan, plan
        assert "Seq Scan" not in plan, plan
    async with sessions() as session:
        kept = await session.execute(text("SELECT kind, key, state FROM exception_records"))
        assert kept.all() == [("delayed_receipt", "out-1", "resolved")]  # raised late, resolved when in
