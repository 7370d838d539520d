"""The console's sign-in, session cookie, CSRF, headers and role checks, with the in-process client."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from service.console import session as session_module
from service.console.routes import pages
from service.db.engine import create_engine, session_factory
from service.db.models import ConsoleSessionRow
from service.security.keys import create_key, issue_key, revoke_key
from tests.console.conftest import Console, csrf_of

PAGES = ["/console", "/console/rulesets", "/console/decisions", "/console/stock", "/console/exceptions"]


async def test_sign_in_gives_an_httponly_samesite_strict_cookie_that_expires(console: Console) -> None:
    page = await console.get("/console/sign-in")
    response = await console.http.post(
        "/console/sign-in",
        data={"api_key": console.api.client.keys["author"], "_csrf": csrf_of(page.text), "next": "/console"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and "rp_console=" in v)
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Path=/console" in cookie
    assert re.search(r"Max-Age=\d+", cookie)
    assert "Secure" not in cookie  # plain http here; Secure is set when the request came over TLS


async def test_an_unknown_key_is_refused_and_gets_no_session(console: Console) -> None:
    page = await console.get("/console/sign-in")
    response = await console.http.post(
        "/console/sign-in",
        data={"api_key": "rp_nope_nope", "_csrf": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert response.status_code == 401
    assert "unknown or revoked" in response.text
    assert "rp_console=" not in response.headers.get("set-cookie", "")


async def test_sign_in_without_the_form_token_is_refused(console: Console) -> None:
    await console.get("/console/sign-in")
    response = await console.http.post(
        "/console/sign-in", data={"api_key": console.api.client.keys["admin"]}, follow_redirects=False
    )
    assert response.status_code == 403
    assert "rp_console=" not in response.headers.get("set-cookie", "")


async def test_a_page_without_a_session_sends_the_person_to_sign_in(console: Console) -> None:
    response = await console.get("/console/rulesets", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/console/sign-in?next=%2Fconsole%2Frulesets")


async def test_a_forged_session_cookie_is_not_accepted(console: Console) -> None:
    await console.sign_in("decide")
    value = console.http.cookies.get("rp_console")
    payload, signature = value.rsplit(".", 1)
    console.http.cookies.clear()
    console.http.cookies.set("rp_console", payload + "." + signature[::-1], path="/console")
    response = await console.get("/console/rulesets", follow_redirects=False)
    assert response.status_code == 303 and "/console/sign-in" in response.headers["location"]


async def test_an_api_key_header_does_not_open_console_pages(console: Console) -> None:
    response = await console.get(
        "/console/rulesets", headers=console.api.client.headers("admin"), follow_redirects=False
    )
    assert response.status_code == 303  # the console reads its session only


async def test_a_page_beyond_the_keys_roles_is_refused_with_the_apis_reason(console: Console) -> None:
    await console.sign_in("decide")
    response = await console.get("/console/rulesets")
    assert response.status_code == 403
    assert (
        "this operation needs the role &#39;author&#39; or &#39;publisher&#39; or &#39;planner&#39;"
        in response.text
    )
    api = await console.api.client.as_("decide").get("/v1/rulesets")
    assert api.status_code == 403


async def test_the_home_page_offers_only_what_the_key_may_use(console: Console) -> None:
    home = await console.sign_in("stock")
    assert 'href="/console/stock"' in home.text and 'href="/console/exceptions"' in home.text
    assert 'href="/console/rulesets"' not in home.text and 'href="/console/simulations"' not in home.text


async def test_an_action_without_the_csrf_token_is_refused_and_changes_nothing(console: Console) -> None:
    await console.sign_in("author")
    created = await console.post("/console/rulesets/channel-priority/versions", {"yaml": _draft(console)})
    assert created.status_code == 200  # followed to the new version's page
    await console.sign_in("publisher")
    response = await console.http.post("/console/rulesets/channel-priority/versions/2/publish", data={})
    assert response.status_code == 403
    assert "CSRF" in response.text
    forged = await console.http.post(
        "/console/rulesets/channel-priority/versions/2/publish", data={"_csrf": "not-the-token"}
    )
    assert forged.status_code == 403
    ruleset = (await console.api.client.as_("author").get("/v1/rulesets/channel-priority")).json()
    assert ruleset["active_version"] == 1


async def test_pages_carry_a_content_security_policy_without_inline_script(console: Console) -> None:
    await console.sign_in("admin")
    for path in [*PAGES, "/console/sign-in"]:
        response = await console.get(path)
        assert response.status_code == 200, path
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy, path
        assert "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert re.search(r"<script(?![^>]*\bsrc=)", response.text) is None, f"inline script on {path}"
        assert " on" + "click=" not in response.text and "style=" not in response.text


async def test_sign_out_ends_the_session(console: Console) -> None:
    await console.sign_in("author")
    response = await console.post("/console/sign-out", follow_redirects=False)
    assert response.status_code == 303
    assert 'rp_console=""' in response.headers["set-cookie"] or "Max-Age=0" in response.headers["set-cookie"]
    after = await console.get("/console/rulesets", follow_redirects=False)
    assert after.status_code == 303


async def test_a_copied_cookie_is_refused_after_sign_out(console: Console) -> None:
    await console.sign_in("author")
    copied = console.http.cookies.get("rp_console")
    assert copied
    assert (await console.post("/console/sign-out", follow_redirects=False)).status_code == 303
    console.http.cookies.clear()
    console.http.cookies.set("rp_console", copied, path="/console")  # the copy taken before sign-out
    response = await console.get("/console/rulesets", follow_redirects=False)
    assert response.status_code == 303 and "/console/sign-in" in response.headers["location"]


async def test_signing_out_ends_only_that_session(console: Console) -> None:
    await console.sign_in("author")
    other = console.http.cookies.get("rp_console")
    await console.sign_in("author")  # a second session of the same key
    assert (await console.post("/console/sign-out", follow_redirects=False)).status_code == 303
    console.http.cookies.clear()
    console.http.cookies.set("rp_console", other, path="/console")
    assert (await console.get("/console/rulesets", follow_redirects=False)).status_code == 200


async def test_a_revoked_keys_sessions_are_removed_from_the_server(console: Console) -> None:
    engine = create_engine(console.api.client.settings.database)
    try:
        sessions = session_factory(engine)
        issued = await issue_key(sessions, "leaving", ["author"])
        console.api.client.keys["leaving"] = issued.key
        await console.sign_in("leaving")
        await console.sign_in("leaving")
        stored = select(ConsoleSessionRow).where(ConsoleSessionRow.key_id == issued.record.id)
        async with sessions() as db:
            before = (await db.execute(stored)).all()
        await revoke_key(sessions, "leaving")
        async with sessions() as db:
            after = (await db.execute(stored)).all()
    finally:
        await engine.dispose()
    assert len(before) == 2
    assert after == []


async def test_a_revoked_key_ends_its_sessions_at_once(console: Console) -> None:
    engine = create_engine(console.api.client.settings.database)
    try:
        sessions = session_factory(engine)
        key = await create_key(sessions, "short-lived", ["author"])
        console.api.client.keys["short-lived"] = key
        await console.sign_in("short-lived")
        assert (await console.get("/console/rulesets")).status_code == 200
        await revoke_key(sessions, "short-lived")
    finally:
        await engine.dispose()
    response = await console.get("/console/rulesets", follow_redirects=False)
    assert response.status_code == 303 and "notice=ended" in response.headers["location"]


async def test_the_next_target_after_sign_in_stays_on_this_site(console: Console) -> None:
    page = await console.get("/console/sign-in")
    response = await console.http.post(
        "/console/sign-in",
        data={
            "api_key": console.api.client.keys["admin"],
            "_csrf": csrf_of(page.text),
            "next": "//evil.example/x",
        },
        follow_redirects=False,
    )
    assert response.headers["location"] == "/console"


def test_every_console_page_declares_roles_or_is_public() -> None:
    for route in pages.routes:
        for handler in route.route_handlers:  # type: ignore[union-attr]
            if handler.http_methods == {"OPTIONS"}:
                continue  # Litestar's own; the console refuses it (it declares no roles)
            assert handler.opt.get("console_roles") or handler.opt.get("console_public"), route.path


def _draft(console: Console) -> str:
    text = Path("rulesets/allocation/channel-priority.yaml").read_text()
    return text.replace("max_distance_km: 800.0", "max_distance_km: 750.0", 1)


def test_without_a_configured_secret_every_worker_of_a_host_shares_one_from_the_var_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSOLE_SECRET", raising=False)
    monkeypatch.setattr(session_module, "VAR_DIR", tmp_path)
    first, second = session_module.load_secret(), session_module.load_secret()
    assert first == second and len(first) == 64
    assert (tmp_path / "console-secret").stat().st_mode & 0o077 == 0
    assert [p.name for p in tmp_path.iterdir()] == ["console-secret"]
