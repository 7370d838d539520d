"""An in-process client for the real app: real database, real stock backend, one API key per role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncSession

from service.app import create_app
from service.db.engine import create_engine, session_factory
from service.rules.trial import TrialWorker
from service.security.keys import ROLES, create_key
from service.services import Services
from service.settings import DatabaseSettings, RulesSettings, Settings, StockSettings


def make_settings(
    database_url: str,
    stock_backend: str = "sql",
    redis_url: str | None = None,
    engine: str = "python",
    rulesets_dir: Path | None = None,
    max_body_bytes: int = 1_048_576,
    tune_collector: bool = False,
) -> Settings:
    """Settings of an app under test. The collector tuning is off unless asked for: its full collection at
    every app start costs a fifth of a second in a test process, and only tests about it need it. The pool
    is smaller than a server's (at most 10 connections, not 20), so two suites of two workers each stay
    well inside a PostgreSQL server's 100 connections."""
    settings = Settings(
        database=DatabaseSettings(url=database_url, pool_size=5),
        stock=StockSettings(backend=stock_backend, redis_url=redis_url),  # type: ignore[arg-type]
        rules=RulesSettings(engine=engine, rulesets_dir=rulesets_dir or Path("rulesets")),  # type: ignore[arg-type]
    )
    return replace(
        settings,
        server=replace(settings.server, max_body_bytes=max_body_bytes, tune_collector=tune_collector),
    )


class ApiClient:
    """`client.as_("stock").put(...)` sends the request with a key that carries only that role.

    The app runs its own event loop (the test client's portal), so tests read the database through
    `client.session()`, which opens a connection on the test's loop, never through the app's pool.
    """

    def __init__(self, client: AsyncTestClient[Any], keys: dict[str, str], settings: Settings) -> None:
        self.http = client
        self.keys = keys
        self.settings = settings

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        engine = create_engine(self.settings.database)
        try:
            async with session_factory(engine)() as session:
                yield session
        finally:
            await engine.dispose()

    @property
    def services(self) -> Services:
        services: Services = self.http.app.state.services
        return services

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def as_(self, role: str) -> _RoleClient:
        return _RoleClient(self.http, self.headers(role))


class _RoleClient:
    def __init__(self, client: AsyncTestClient[Any], headers: dict[str, str]) -> None:
        self._client = client
        self._headers = headers

    def __getattr__(self, method: str) -> Any:
        call = getattr(self._client, method)

        async def send(url: str, **kwargs: Any) -> Any:
            kwargs["headers"] = {**self._headers, **kwargs.get("headers", {})}
            return await call(url, **kwargs)

        return send


@asynccontextmanager
async def api_client(settings: Settings, trials: TrialWorker | None = None) -> AsyncIterator[ApiClient]:
    """The app with one key per role; its ruleset checks run in `trials` when given (the session's)."""
    app = create_app(settings, trials=trials)
    async with AsyncTestClient(app=app, base_url="http://127.0.0.1") as client:
        engine = create_engine(settings.database)
        try:
            keys = {role: await create_key(session_factory(engine), f"test-{role}", [role]) for role in ROLES}
        finally:
            await engine.dispose()
        yield ApiClient(client, keys, settings)
