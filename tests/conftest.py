"""Fixtures shared by every test: real Redis, real SQLite and PostgreSQL databases.

A migrated database is prepared once per session (by running the real migrations) and each test gets a
copy of it: a file copy on SQLite, `CREATE DATABASE ... TEMPLATE` on PostgreSQL. The app under test still
starts with its own lifespan, which checks the migrations (nothing left to apply) like it does on any start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.engine import create_engine
from service.db.migrate import upgrade
from service.rules.trial import TrialWorker
from service.settings import DatabaseSettings
from tests.apiclient import ApiClient, api_client, make_settings
from tests.services import clone_postgres_database, postgres_database, redis_server


def run_aside(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run `coroutine` on a fresh loop in a worker thread: a session fixture may first be asked for from
    inside a running test loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result()


async def migrate(url: str) -> None:
    engine = create_engine(DatabaseSettings(url=url))
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


async def _reset_postgres(url: str) -> None:
    engine = create_engine(DatabaseSettings(url=url))
    async with engine.begin() as conn:
        await conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        await conn.exec_driver_sql("CREATE SCHEMA public")
    await engine.dispose()


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


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """The session's migrated PostgreSQL database that each test's database is cloned from."""
    with postgres_database() as url:
        run_aside(migrate(url))
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's migrated SQLite file that each test's database is copied from."""
    path = tmp_path_factory.mktemp("sqlite-template") / "migrated.db"
    run_aside(migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite URL of a file that does not exist yet."""
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def migrated_sqlite_url(sqlite_url: str, sqlite_template: Path) -> str:
    """`sqlite_url`, holding an empty, migrated database."""
    shutil.copyfile(sqlite_template, sqlite_url.removeprefix("sqlite+aiosqlite:///"))
    return sqlite_url


async def migrated_database(kind: str, request: pytest.FixtureRequest, filename: str = "test.db") -> str:
    """An empty, migrated database of `kind` (sqlite in the test's tmp_path, or the session's PostgreSQL,
    replaced by a fresh clone of the migrated template)."""
    if kind == "sqlite":
        path = request.getfixturevalue("tmp_path") / filename
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("postgres_server_database")
    clone_postgres_database(request.getfixturevalue("postgres_template"), url)
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
async def api(database_url: str, trials: TrialWorker) -> AsyncIterator[ApiClient]:
    """The app on SQLite and on PostgreSQL, SQL stock backend, python rules engine, one key per role."""
    async with api_client(make_settings(database_url), trials) as client:
        yield client


@pytest.fixture
async def sqlite_api(migrated_sqlite_url: str, trials: TrialWorker) -> AsyncIterator[ApiClient]:
    """The app on SQLite only, for tests whose subject is not the database."""
    async with api_client(make_settings(migrated_sqlite_url), trials) as client:
        yield client


@pytest.fixture(scope="session")
def trials() -> Iterator[TrialWorker]:
    """One trial child for the session's ruleset checks and dry runs, closed at its end."""
    with TrialWorker() as worker:
        yield worker
