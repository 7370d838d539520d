"""The listings people page through (the console's decisions and stock pages, the exceptions by kind or
location, an inbox without a role filtered by kind) read the page they answer from an index in their own
order, on a table of 20,000 rows with no statistics gathered: no sort of every matching row, no walk of
the table filtering on another column."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.console.operations import sku_events
from service.decisions.search import DecisionFilter, find_decisions
from service.workflow.exceptions import ExceptionFilter, listing
from tests.workflow.conftest import START
from tests.workflow.test_bounded_reads import captured, fill, plans

Sessions = async_sessionmaker[AsyncSession]


async def plan_of(engine: AsyncEngine, query: Any) -> str:
    """The plan of `query` as the code compiles it, with its parameters."""
    async with engine.connect() as connection:
        compiled = query.compile(connection.sync_connection)
    parameters = tuple(compiled.construct_params().values())
    return "\n".join(await plans(engine, [(str(compiled), parameters)]))


def in_order_from(plan: str, index: str) -> None:
    assert index in plan, plan  # a partition's copy of it is named "<partition>_<columns>_idx"
    assert "TEMP B-TREE" not in plan and "Sort  (" not in plan, plan  # in the listing's order as read
    assert "Seq Scan" not in plan, plan


DECISIONS = (
    "INSERT INTO decisions (id, kind, created_at, ruleset_name, ruleset_version, ruleset_sha256, request,"
    " decision, timings) SELECT 'd-' || i, 'allocation', :at, 'r', 1, 's', '{}', '{}', '{}' FROM n"
)


async def test_the_console_decisions_page_without_a_filter_reads_its_page_of_the_newest(
    sessions: Sessions, db_engine: AsyncEngine
) -> None:
    await fill(db_engine, DECISIONS, START)
    with captured(db_engine, "decisions") as statements:
        async with sessions() as session:
            found, more = await find_decisions(session, DecisionFilter(), 0, 25)
    assert len(found) == 25 and more
    assert [d.decision_id for d in found[:2]] == ["d-9999", "d-9998"]  # the same moment: by id, descending
    assert len(statements) == 1
    for plan in await plans(db_engine, statements):
        in_order_from(plan, "created_at_id")


EXCEPTIONS = (
    "INSERT INTO exception_records (id, kind, key, state, location, detail, opened_at, updated_at)"
    " SELECT 'x-' || (100000 + i), 'negative_inventory', 'k-' || i, 'resolved', 'S1', '{}', :at, :at FROM n"
)


async def test_the_exceptions_by_kind_read_the_newest_of_that_kind(db_engine: AsyncEngine) -> None:
    await fill(db_engine, EXCEPTIONS, START)  # another kind, one location
    wanted = ExceptionFilter("stuck_approval", None, None, None, None, 50)
    in_order_from(await plan_of(db_engine, listing(wanted)), "ix_exception_records_kind_id")
    later = ExceptionFilter("stuck_approval", None, None, None, "x-150000", 50)
    in_order_from(await plan_of(db_engine, listing(later)), "ix_exception_records_kind_id")


async def test_the_exceptions_by_location_read_the_newest_at_that_location(db_engine: AsyncEngine) -> None:
    await fill(db_engine, EXCEPTIONS, START)
    wanted = ExceptionFilter(None, None, "DC1", None, None, 50)
    in_order_from(await plan_of(db_engine, listing(wanted)), "ix_exception_records_location_id")


STOCK_EVENTS = "INSERT INTO stock_events (event_id, sku, type, applied_at_ms) SELECT 'e-' || i, 'TEE', 'sale', i FROM n WHERE :at IS NOT NULL"


async def test_the_console_stock_page_reads_the_skus_newest_events(db_engine: AsyncEngine) -> None:
    await fill(db_engine, STOCK_EVENTS, START)  # another SKU's
    in_order_from(await plan_of(db_engine, sku_events("MUG")), "ix_stock_events_sku_applied_at")
