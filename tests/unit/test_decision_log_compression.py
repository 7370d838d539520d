"""The decision log's JSON columns on PostgreSQL compressed with lz4 (migration 0025): every partition,
those made later by the partition maintenance, the values a decision writes; the downgrade's return to
the server's default."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.engine import create_engine
from service.db.migrate import downgrade, upgrade
from service.db.partitions import maintain
from service.settings import DatabaseSettings
from tests.conftest import _reset_postgres

TODAY = datetime.now(UTC).date()
COLUMNS = {
    "decisions": {"request", "decision", "trace", "shadow", "timings", "inputs"},
    "decision_traces": {"trace"},
}


@pytest.fixture
async def pg(postgres_server_database: str) -> AsyncIterator[AsyncEngine]:
    """An empty PostgreSQL database of this session's (not migrated)."""
    await _reset_postgres(postgres_server_database)
    engine = create_engine(DatabaseSettings(url=postgres_server_database))
    try:
        async with engine.connect() as conn:
            methods = (
                await conn.execute(
                    text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
                )
            ).scalar()
        if "lz4" not in (methods or []):
            pytest.skip("this PostgreSQL server has no lz4")
        yield engine
    finally:
        await engine.dispose()


async def compression(engine: AsyncEngine) -> dict[tuple[str, str], str]:
    """(table or partition, column) -> its compression method ('l' lz4, 'p' pglz, '' the default), for
    the JSON columns of the decision log's tables and their partitions."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT c.relname, a.attname, a.attcompression::text FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid "
                "LEFT JOIN pg_inherits i ON i.inhrelid = c.oid LEFT JOIN pg_class p ON p.oid = i.inhparent "
                "WHERE coalesce(p.relname, c.relname) = ANY(:tables) AND c.relkind IN ('r', 'p') "
                "AND a.attnum > 0 AND NOT a.attisdropped"
            ),
            {"tables": list(COLUMNS)},
        )
        return {
            (str(relation), str(column)): str(method)
            for relation, column, method in rows
            if column in COLUMNS["decisions" if relation.startswith("decisions") else "decision_traces"]
        }


async def test_every_partition_now_and_later_compresses_the_logs_json_with_lz4(pg: AsyncEngine) -> None:
    await upgrade(pg)
    await maintain(pg, TODAY + timedelta(days=30), ahead_days=1, retention_days=0)
    methods = await compression(pg)
    later = f"decisions_p{TODAY + timedelta(days=31):%Y%m%d}"
    assert {relation for relation, _ in methods} >= {"decisions", "decisions_default", later}
    assert (later, "inputs") in methods and ("decision_traces_default", "trace") in methods
    assert set(methods.values()) == {"l"}, methods
    big = '{"view": [' + ", ".join(f'{{"sku": "S-{n}", "qty": {n}}}' for n in range(200)) + "]}"
    async with pg.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO decisions (id, kind, created_at, ruleset_name, ruleset_version, "
                "ruleset_sha256, request, decision, timings, inputs) VALUES ('d-1', 'allocation', now(), "
                "'r', 1, 'x', '{}', '{}', '{}', :big)"
            ),
            {"big": big},
        )
        stored = (
            await conn.execute(text("SELECT pg_column_compression(inputs), inputs::text FROM decisions"))
        ).one()
    assert tuple(stored) == ("lz4", big)


async def test_the_downgrade_gives_the_columns_back_to_the_servers_default(pg: AsyncEngine) -> None:
    await upgrade(pg)
    await downgrade(pg, "0023_outbox_txid")
    assert set((await compression(pg)).values()) == {""}
