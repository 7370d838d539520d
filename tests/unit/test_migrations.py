"""The migrations build the same schema on SQLite and PostgreSQL and are safe to run twice."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

import service.db.models  # noqa: F401
from service.db.base import Base
from service.db.engine import session_factory
from service.db.migrate import alembic_config, downgrade, upgrade
from service.decisions.log import SqlDecisionLog

KEY_INDEX = "ix_decisions_kind_idempotency_key"


async def test_migrations_create_every_model_table(db_engine: AsyncEngine) -> None:
    async with db_engine.connect() as conn:
        tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    assert set(Base.metadata.tables) <= tables


async def test_upgrade_twice_is_harmless(db_engine: AsyncEngine) -> None:
    await upgrade(db_engine)
    async with db_engine.connect() as conn:
        version = (await conn.exec_driver_sql("SELECT version_num FROM alembic_version")).scalar_one()
    assert version == head_revision()


def head_revision() -> str:
    """The one head of the migration chain (two heads would mean two branches forked it)."""
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"the migrations have {len(heads)} heads: {heads}"
    return str(heads[0])


async def key_index(engine: AsyncEngine) -> str:
    """The definition of the decisions' index of idempotency keys."""
    sql = (
        "SELECT sql FROM sqlite_master WHERE name = :name"
        if engine.dialect.name == "sqlite"
        else "SELECT indexdef FROM pg_indexes WHERE indexname = :name"
    )
    async with engine.connect() as conn:
        return str((await conn.execute(text(sql), {"name": KEY_INDEX})).scalar_one())


async def key_lookup_plan(engine: AsyncEngine) -> str:
    query = "SELECT id FROM decisions WHERE kind = 'allocation' AND idempotency_key = 'k-1'"
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}")
            return " ".join(str(row[-1]) for row in rows)
        await conn.exec_driver_sql("SET enable_seqscan = off")
        return " ".join(str(row[0]) for row in await conn.exec_driver_sql(f"EXPLAIN {query}"))


async def test_the_key_index_holds_keyed_decisions_only_and_the_lookup_uses_it_before_and_after(
    db_engine: AsyncEngine,
) -> None:
    await downgrade(db_engine, "0018_journal_checkpoint")
    assert "IS NOT NULL" not in await key_index(db_engine)
    now = datetime.now(UTC)
    async with db_engine.begin() as conn:
        for n, key in enumerate(("k-1", None)):
            await conn.execute(
                text(
                    "INSERT INTO decisions (id, kind, created_at, idempotency_key, ruleset_name, "
                    "ruleset_version, ruleset_sha256, request, decision, timings) VALUES (:id, 'allocation', "
                    ":at, :key, 'r', 1, 'x', '{}', '{}', '{}')"
                ),
                {"id": f"d-{n}", "at": now, "key": key},
            )
    await upgrade(db_engine)
    assert "idempotency_key IS NOT NULL" in (await key_index(db_engine)).replace("(", "").replace(")", "")
    assert "kind_idempotency_key" in await key_lookup_plan(db_engine)
    log = SqlDecisionLog(session_factory(db_engine))
    found = await log.find_by_idempotency_key("allocation", "k-1")
    assert found is not None and found["decision_id"] == "d-0"
    async with db_engine.connect() as conn:
        assert (await conn.exec_driver_sql("SELECT count(*) FROM decisions")).scalar_one() == 2
    await downgrade(db_engine, "0018_journal_checkpoint")
    assert "IS NOT NULL" not in await key_index(db_engine)
    await upgrade(db_engine)
