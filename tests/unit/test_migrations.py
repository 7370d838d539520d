"""The migrations build the same schema on SQLite and PostgreSQL and are safe to run twice."""

from __future__ import annotations

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

import service.db.models  # noqa: F401
from service.db.base import Base
from service.db.migrate import upgrade


async def test_migrations_create_every_model_table(db_engine: AsyncEngine) -> None:
    async with db_engine.connect() as conn:
        tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    assert set(Base.metadata.tables) <= tables


async def test_upgrade_twice_is_harmless(db_engine: AsyncEngine) -> None:
    await upgrade(db_engine)
    async with db_engine.connect() as conn:
        version = (await conn.exec_driver_sql("SELECT version_num FROM alembic_version")).scalar_one()
    assert version[:4].isdigit()
