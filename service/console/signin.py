"""Sign-in with an API key, sign-out, and the home page listing what the signed-in key may use."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from litestar import Request, Response, get, post
from litestar.response import Redirect

from service.console import session as sessions
from service.console.web import (
    PUBLIC,
    areas_for,
    current_session,
    done,
    principal,
    render,
    secure,
    signing_secret,
)
from service.security.keys import ROLES

SIGNED_IN: dict[str, Any] = {"console_roles": ROLES}  # any key: what it may use is shown per area


def _cookie_options(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return {
        "path": "/console",
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
    }


def _safe_next(target: str | None) -> str:
    """Only a console path of this site (no scheme, no host, no '//' tricks)."""
    if not target:
        return "/console"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console") or target.startswith("//"):
        return "/console"
    return target


@get("/sign-in", opt=PUBLIC)
async def sign_in_page(request: Request[Any, Any, Any]) -> Response[Any]:
    pre = sessions.new_session(None, sessions.PRE_SESSION_SECONDS)
    request.scope["console_session"] = pre  # type: ignore[typeddict-unknown-key]
    response = render(
        request, "sign_in.html", title="Sign in", next=_safe_next(request.query_params.get("next"))
    )
    response.set_cookie(
        sessions.PRE_COOKIE,
        sessions.encode(pre, signing_secret(request)),
        max_age=sessions.PRE_SESSION_SECONDS,
        **_cookie_options(request),
    )
    return response


@post("/sign-in", opt=PUBLIC, status_code=303)
async def sign_in(request: Request[Any, Any, Any]) -> Response[Any]:
    form = await request.form()
    key = form.get("api_key")
    target = _safe_next(form.get("next") if isinstance(form.get("next"), str) else None)
    services = request.app.state.services
    found = None
    if isinstance(key, str) and key.strip():
        found = await services.principals.principal(services, key.strip())
    if found is None or found.expired(datetime.now(UTC)):
        pre = sessions.decode(request.cookies.get(sessions.PRE_COOKIE), signing_secret(request))
        request.scope["console_session"] = pre  # type: ignore[typeddict-unknown-key]
        reason = "that key has expired" if found is not None else "that key is unknown or revoked"
        return render(request, "sign_in.html", status_code=401, title="Sign in", next=target, failure=reason)
    key_expiry = found.expires_at.timestamp() if found.expires_at is not None else None
    session = sessions.new_session(found.key_id, sessions.SESSION_SECONDS, key_expiry)
    async with services.sessions.begin() as db:
        await sessions.store(db, session)
    response: Response[Any] = secure(Redirect(target, status_code=303))
    response.set_cookie(
        sessions.COOKIE,
        sessions.encode(session, signing_secret(request)),
        max_age=max(1, int(session.expires_at - time.time())),
        **_cookie_options(request),
    )
    response.delete_cookie(sessions.PRE_COOKIE, path="/console")
    return response


@post("/sign-out", opt=SIGNED_IN)
async def sign_out(request: Request[Any, Any, Any]) -> Response[Any]:
    """End the session on the server (a copy of its cookie opens nothing after this) and drop the cookie."""
    session = current_session(request)
    if session is not None:
        async with request.app.state.services.sessions.begin() as db:
            await sessions.end(db, session)
    response = done("/console/sign-in", "signed-out")
    response.delete_cookie(sessions.COOKIE, path="/console")
    return response


@get("/", opt=SIGNED_IN)
async def home(request: Request[Any, Any, Any]) -> Response[Any]:
    return render(request, "home.html", title="Console", areas=areas_for(principal(request)))
