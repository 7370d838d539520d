"""Fixtures shared by every test: real Redis, real SQLite and PostgreSQL databases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.engine import create_engine
from service.db.migrate import upgrade
from service.settings import DatabaseSettings
from tests.apiclient import ApiClient, api_client, make_settings
from tests.services import postgres_database, redis_server


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    with redis_server() as (url, _process):
        yield url


@pytest.fixture(scope="session")
def redis_cluster_ports() -> Iterator[list[int]]:
    """A local three-primary Redis Cluster of this session's own (tests/redis_cluster.py): its ports."""
    from tests.redis_cluster import local_cluster

    with local_cluster() as ports:
        yield ports


@pytest.fixture
async def redis_url(redis_server_url: str) -> AsyncIterator[str]:
    """A Redis URL whose database is empty at the start of the test."""
    client = aioredis.Redis.from_url(redis_server_url)
    await client.flushdb()
    await client.aclose()
    yield redis_server_url


@pytest.fixture(scope="session")
def postgres_server_database() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


async def _reset_postgres(url: str) -> None:
    engine = create_engine(DatabaseSettings(url=url))
    async with engine.begin() as conn:
        await conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        await conn.exec_driver_sql("CREATE SCHEMA public")
    await engine.dispose()


async def migrated_database(kind: str, request: pytest.FixtureRequest, filename: str = "test.db") -> str:
    """An empty, migrated database of `kind` (sqlite in the test's tmp_path, or the session's PostgreSQL)."""
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{request.getfixturevalue('tmp_path') / filename}"
    else:
        url = request.getfixturevalue("postgres_server_database")
        await _reset_postgres(url)
    engine = create_engine(DatabaseSettings(url=url))
    await upgrade(engine)
    await engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest) -> str:
    """An empty, migrated database: once on SQLite, once on PostgreSQL."""
    return await migrated_database(request.param, request)


@pytest.fixture
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(DatabaseSettings(url=database_url))
    yield engine
    await engine.dispose()


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[ApiClient]:
    """The app on SQLite and on PostgreSQL, SQL stock backend, python rules engine, one key per role."""
    async with api_client(make_settings(database_url)) as client:
        yield client


@pytest.fixture
async def sqlite_api(sqlite_url: str) -> AsyncIterator[ApiClient]:
    """The app on SQLite only, for tests whose subject is not the database."""
    async with api_client(make_settings(sqlite_url)) as client:
        yield client
