"""The migrations build the same schema on SQLite and PostgreSQL and are safe to run twice."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

import service.db.models  # noqa: F401
from service.db.base import Base
from service.db.engine import session_factory
from service.db.migrate import alembic_config, downgrade, upgrade
from service.decisions.log import SqlDecisionLog
from service.decisions.record import DecisionRecord

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


async def test_traces_kept_apart_go_back_into_their_decisions_on_downgrade_and_out_again(
    db_engine: AsyncEngine,
) -> None:
    now = datetime.now(UTC)
    trace = {"evaluations": [{"facts": {"sku": "A"}, "rules": {"matched": ["r1"]}}]}
    await downgrade(db_engine, "0019_decision_key_index")
    async with db_engine.begin() as conn:  # a decision logged before: its trace inline
        await conn.execute(
            text(
                "INSERT INTO decisions (id, kind, created_at, ruleset_name, ruleset_version, ruleset_sha256, "
                "request, decision, trace, timings) VALUES ('d-old', 'availability', :at, 'r', 1, 'x', '{}', "
                "'{}', :trace, '{}')"
            ),
            {"at": now, "trace": json.dumps(trace)},
        )
    await upgrade(db_engine)
    log = SqlDecisionLog(session_factory(db_engine))
    log.start()
    logged = [
        DecisionRecord(
            id=f"d-{n}",
            kind="availability",
            created_at=now,
            request={},
            decision={},
            ruleset={"name": "r", "version": 1, "sha256": "x"},
            trace=trace,
            timings={},
        )
        for n in range(2)
    ]
    for record in logged:
        await log.record(record)
    await log.close()
    reader = SqlDecisionLog(session_factory(db_engine))
    for decision_id in ("d-old", "d-0", "d-1"):
        found = await reader.get(decision_id)
        assert found is not None and found["trace"] == trace
    async with db_engine.connect() as conn:
        assert (await conn.exec_driver_sql("SELECT count(*) FROM decision_traces")).scalar_one() == 1
    await downgrade(db_engine, "0019_decision_key_index")
    async with db_engine.connect() as conn:
        inline = await conn.exec_driver_sql("SELECT id, trace FROM decisions ORDER BY id")
        assert {row[0]: _json(row[1]) for row in inline} == {"d-0": trace, "d-1": trace, "d-old": trace}
        tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
        assert "decision_traces" not in tables
    await upgrade(db_engine)
    for decision_id in ("d-old", "d-0", "d-1"):
        found = await reader.get(decision_id)
        assert found is not None and found["trace"] == trace


def _json(value: object) -> object:
    """A JSON column's value as the driver gives it (text on SQLite, decoded already on PostgreSQL)."""
    return json.loads(value) if isinstance(value, str) else value
