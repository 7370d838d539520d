"""A served instance (`retail-policy serve`, real worker processes) on a chosen stock backend, with keys."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from service.db.engine import create_engine, session_factory
from service.db.migrate import upgrade
from service.settings import DatabaseSettings
from tests.server import running_server

BACKENDS = ["sqlite", "postgresql", "redis"]


@dataclass
class Served:
    base: str
    headers: dict[str, str]
    env: dict[str, str]


async def _migrate_and_key(url: str, reset_postgres: bool) -> str:
    from service.security.keys import create_key
    from tests.conftest import _reset_postgres

    if reset_postgres:
        await _reset_postgres(url)
    engine = create_engine(DatabaseSettings(url=url))
    try:
        await upgrade(engine)
        return await create_key(session_factory(engine), "e2e", ["stock", "decide"])
    finally:
        await engine.dispose()


def backend_env(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, redis_url: str | None = None
) -> dict[str, str]:
    if backend == "postgresql":
        env = {"DATABASE_URL": request.getfixturevalue("postgres_server_database"), "STOCK_BACKEND": "sql"}
    else:
        env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'var' / 'service.db'}"}
        env["STOCK_BACKEND"] = "sql"
    if backend == "redis":
        url = redis_url or request.getfixturevalue("redis_server_url")
        if redis_url is None:
            redis.Redis.from_url(url).flushdb()
        env.update({"STOCK_BACKEND": "redis", "REDIS_URL": url})
    if backend == "redis-cluster":
        # the session's local three-primary Redis Cluster, flushed (it is this session's own)
        ports: list[int] = request.getfixturevalue("redis_cluster_ports")
        for port in ports:
            redis.Redis(host="127.0.0.1", port=port).flushall()
        nodes = ",".join(f"127.0.0.1:{port}" for port in ports)
        env.update({"STOCK_BACKEND": "redis", "REDIS_CLUSTER_URLS": nodes})
    return env


@contextmanager
def served(env: dict[str, str], tmp_path: Path, workers: int = 2) -> Iterator[Served]:
    (tmp_path / "var").mkdir(exist_ok=True)
    key = asyncio.run(_migrate_and_key(env["DATABASE_URL"], env["DATABASE_URL"].startswith("postgresql")))
    with running_server(tmp_path, env={**env, "AUTO_MIGRATE": "0"}, workers=workers) as base:
        yield Served(base, {"Authorization": f"Bearer {key}"}, env)
