"""A real service and a real headless Chromium for the console journeys.

The service runs as `retail-policy serve` on a free loopback port (SQLite, SQL stock) with the decision
fixtures' network loaded and one key per role; the browser is Debian's Chromium driven by Playwright.
`CONSOLE_SCREENSHOTS=1` makes the journeys save the screenshots of docs/console.md (docs/console/*.png).
A failing journey leaves a screenshot and the page's HTML under var/console-failures/ for the CI log.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.db.engine import create_engine, session_factory
from service.security.keys import create_key
from service.settings import DatabaseSettings
from tests.api.decisions_fixtures import ITEMS, LOCATIONS, STOCK
from tests.server import running_server

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent.parent
SCREENSHOTS = ROOT / "docs" / "console"
FAILURES = ROOT / "var" / "console-failures"
ROLES = ("author", "publisher", "decide", "planner", "stock", "admin", "requester")
PEOPLE = {"approver": ["store_manager", "stock"]}  # keys with more than one role


@dataclass
class LiveService:
    url: str
    keys: dict[str, str]

    def api(self, role: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.keys[role]}"}, timeout=30.0
        )


async def _keys(database_url: str) -> dict[str, str]:
    engine = create_engine(DatabaseSettings(url=database_url))
    try:
        sessions = session_factory(engine)
        keys = {role: await create_key(sessions, f"{role}-person", [role]) for role in ROLES}
        for name, roles in PEOPLE.items():
            keys[name] = await create_key(sessions, f"{name}-person", roles)
        return keys
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def live_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    workdir = tmp_path_factory.mktemp("console-service")
    (workdir / "var").mkdir()
    database_url = f"sqlite+aiosqlite:///{workdir / 'var' / 'service.db'}"
    env = {
        "DATABASE_URL": database_url,
        "STOCK_BACKEND": "sql",
        "REDIS_URL": "",
        "RULES_ENGINE": "python",
        "CONSOLE_SECRET": "browser-journeys",
    }
    with running_server(workdir, env=env) as url:
        # a thread of its own: Playwright's sync API keeps an event loop running in this one
        with ThreadPoolExecutor(1) as pool:
            keys = pool.submit(asyncio.run, _keys(database_url)).result()
        service = LiveService(url, keys)
        with service.api("stock") as client:
            for path, rows in (("/v1/locations", LOCATIONS), ("/v1/items", ITEMS)):
                assert client.put(path, json=rows).status_code == 200
            snapshot = [
                {
                    "sku": r.sku,
                    "location": r.location,
                    "sellable": r.sellable,
                    "return_pending": r.return_pending,
                    "in_transit": r.in_transit,
                }
                for r in STOCK
            ]
            assert client.put("/v1/stock", json=snapshot).status_code == 200
        yield service


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the journeys. Module-scoped on purpose: Playwright's sync API keeps an event loop
    running in this thread while it is started, so it must stop before the suite's async tests run."""
    if not Path(CHROMIUM).exists():
        from tests.services import unavailable

        unavailable(f"no Chromium at {CHROMIUM} (scripts/bootstrap.sh installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()
    # the tests after these are async: Playwright's loop must not be left running in this thread
    assert asyncio._get_running_loop() is None, "Playwright left its event loop running"


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id="Europe/London")
    context.set_default_timeout(15_000)
    opened = context.new_page()
    opened.on("dialog", lambda dialog: dialog.accept())  # the publish and rollback confirmations
    try:
        yield opened
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            FAILURES.mkdir(parents=True, exist_ok=True)
            name = request.node.name
            opened.screenshot(path=str(FAILURES / f"{name}.png"), full_page=True)
            (FAILURES / f"{name}.html").write_text(opened.content())
            print(f"\nconsole journey failed on {opened.url}: see {FAILURES / name}.png and .html")
        context.close()


def sign_in(page: Any, service: LiveService, role: str, then: str = "/console") -> None:
    page.goto(f"{service.url}/console/sign-in?next={then}")
    page.get_by_label("API key").fill(service.keys[role])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{then}*")


def sign_out(page: Any) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/sign-in*")


def shot(page: Any, name: str, full_page: bool = False) -> None:
    """Save a documentation screenshot when asked to (CONSOLE_SCREENSHOTS=1)."""
    if os.environ.get("CONSOLE_SCREENSHOTS") not in ("1", "true", "yes"):
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)
