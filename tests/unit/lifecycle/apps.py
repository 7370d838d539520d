"""The real app with the ruleset routes and the rules registry running, for API and hot-switch tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.db.engine import create_engine, session_factory
from service.rules.trial import TrialWorker
from service.security.keys import ROLES, create_key
from service.settings import Settings
from tests.apiclient import ApiClient


def create_rules_app(settings: Settings | None = None) -> Litestar:
    """App factory for uvicorn (`tests.unit.lifecycle.apps:create_rules_app`): the real app."""
    return create_app(settings)


@asynccontextmanager
async def rules_api_client(
    settings: Settings, extra_keys: dict[str, list[str]] | None = None, trials: TrialWorker | None = None
) -> AsyncIterator[ApiClient]:
    """One key per role (named `test-<role>`), plus `extra_keys` (name -> roles) stored under their name;
    the ruleset checks run in `trials` when given."""
    app = create_app(settings, trials=trials)
    async with AsyncTestClient(app=app, base_url="http://127.0.0.1") as client:
        engine = create_engine(settings.database)
        try:
            sessions = session_factory(engine)
            keys = {role: await create_key(sessions, f"test-{role}", [role]) for role in ROLES}
            for name, roles in (extra_keys or {}).items():
                keys[name] = await create_key(sessions, name, roles)
        finally:
            await engine.dispose()
        yield ApiClient(client, keys, settings)


def empty_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "rulesets"
    folder.mkdir(exist_ok=True)
    return folder


def problem_fields(response: Any) -> list[str]:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return [error["field"] for error in response.json().get("errors", [])]
