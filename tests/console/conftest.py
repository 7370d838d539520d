"""The console behind the real app (SQLite, SQL stock, the decision fixtures' network), and a way to sign in."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from service.rules.trial import TrialWorker
from tests.api.decisions_fixtures import DecisionsApi, decisions_api

CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


class Console:
    """A person in front of the console: `sign_in(role)` signs in with the key that carries only that role."""

    def __init__(self, api: DecisionsApi) -> None:
        self.api = api
        self.http = api.client.http
        self.csrf = ""

    async def sign_in(self, role: str) -> Any:
        self.http.cookies.clear()
        page = await self.http.get("/console/sign-in")
        response = await self.http.post(
            "/console/sign-in",
            data={"api_key": self.api.client.keys[role], "_csrf": csrf_of(page.text), "next": "/console"},
            follow_redirects=False,
        )
        assert response.status_code == 303, response.text
        home = await self.http.get("/console")
        self.csrf = csrf_of(home.text)
        return home

    async def get(self, path: str, **kwargs: Any) -> Any:
        return await self.http.get(path, **kwargs)

    async def post(self, path: str, data: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return await self.http.post(path, data={"_csrf": self.csrf, **(data or {})}, **kwargs)


@pytest.fixture
async def console(
    migrated_sqlite_url: str, monkeypatch: pytest.MonkeyPatch, trials: TrialWorker
) -> AsyncIterator[Console]:
    monkeypatch.setenv("CONSOLE_SECRET", "test-console-secret")
    async with decisions_api(migrated_sqlite_url, trials) as api:
        yield Console(api)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test, so the browser `page` fixture knows a journey failed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
