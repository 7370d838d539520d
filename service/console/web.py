"""What every console page shares: who is signed in, the roles a page needs, CSRF, headers, rendering.

A page declares the roles of the API handler it mirrors with `same_roles(handler)`; `check_request` (the
router's before-request hook) signs the person in from the session cookie, refuses a page the key's
roles do not reach with the API's own wording, and refuses any unsafe request without the session's
CSRF token. A console route that declares neither roles nor `PUBLIC` is refused, so a page added without
roles is closed, not open.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Request, Response
from litestar.handlers import HTTPRouteHandler
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.template.config import TemplateConfig
from markupsafe import Markup, escape

from service.api import approvals as api_approvals
from service.api import decisions as api_decisions
from service.api import exceptions as api_exceptions
from service.api import rulesets as api_rulesets
from service.api import simulations as api_simulations
from service.api import stock as api_stock
from service.console import session as sessions
from service.errors import ServiceError
from service.security.keys import Principal

HERE = Path(__file__).resolve().parent
PUBLIC: dict[str, Any] = {"console_public": True}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PAGE_SIZE = 25
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NOTICES = {
    "created": "Draft saved.",
    "published": "Published: decisions now use this version.",
    "shadowed": "Shadowing: decisions now also evaluate this version and record the differences.",
    "unshadowed": "Shadow cleared.",
    "rolled-back": "Rolled back.",
    "acknowledged": "Acknowledged.",
    "resolved": "Resolved.",
    "started": "Simulation started.",
    "approved": "Approved.",
    "rejected": "Rejected.",
    "signed-out": "You are signed out.",
    "ended": "Your session has ended; sign in again.",
}


class ConsoleRefusal(Exception):
    """A console request refused before its page runs (missing role, stale CSRF token)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


def same_roles(handler: HTTPRouteHandler) -> dict[str, Any]:
    """The `opt` of a console route that the callers of the API `handler` may use, and only they."""
    roles = handler.opt.get("roles")
    if not roles:
        raise ValueError(f"{handler} declares no roles")
    return {"console_roles": tuple(roles)}


def any_roles(*handlers: HTTPRouteHandler) -> dict[str, Any]:
    """A page that shows what any of these API handlers show (each part is checked again in the page)."""
    roles: list[str] = []
    for handler in handlers:
        roles.extend(role for role in same_roles(handler)["console_roles"] if role not in roles)
    return {"console_roles": tuple(roles)}


AREAS = (
    (
        "Rulesets",
        "/console/rulesets",
        api_rulesets.list_rulesets,
        "write, test, compare and publish policies",
    ),
    ("Decisions", "/console/decisions", api_decisions.get_decision, "find a decision and read why"),
    ("Stock", "/console/stock", api_stock.get_stock, "a SKU's buckets across locations"),
    ("Exceptions", "/console/exceptions", api_exceptions.list_exceptions, "the exceptions queue"),
    ("Simulations", "/console/simulations", api_simulations.get_simulation, "replay promotion scenarios"),
    ("Approvals", "/console/approvals", api_approvals.list_approvals, "the cases waiting for your approval"),
)


def areas_for(person: Principal) -> list[dict[str, str]]:
    """The console areas whose API the person's key may call."""
    return [
        {"title": title, "href": href, "about": about}
        for title, href, handler, about in AREAS
        if may(person, handler)
    ]


def may(principal: Principal, handler: HTTPRouteHandler) -> bool:
    return any(principal.has(role) for role in handler.opt.get("roles", ()))


def signing_secret(request: Request[Any, Any, Any]) -> bytes:
    state = request.app.state
    secret = state.get("console_secret")
    if secret is None:
        secret = sessions.load_secret()
        state.console_secret = secret
    return bytes(secret)


def current_session(request: Request[Any, Any, Any]) -> sessions.ConsoleSession | None:
    return sessions.decode(request.cookies.get(sessions.COOKIE), signing_secret(request))


def principal(request: Request[Any, Any, Any]) -> Principal:
    found = request.scope.get("principal")
    if not isinstance(found, Principal):
        raise ConsoleRefusal(401, "Not signed in", "sign in first")
    return found


def _sign_in_redirect(request: Request[Any, Any, Any], notice: str | None = None) -> Response[Any]:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    query = {"next": target} if request.method in SAFE_METHODS else {}
    if notice:
        query["notice"] = notice
    response: Response[Any] = Redirect(
        "/console/sign-in" + (f"?{urlencode(query)}" if query else ""), status_code=303
    )
    response.delete_cookie(sessions.COOKIE, path="/console")
    return response


async def _form_token(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("x-csrf-token")
    if header:
        return header
    form = await request.form()
    value = form.get("_csrf")
    return value if isinstance(value, str) else None


async def check_request(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """Sign the person in from the session, check the page's roles, check CSRF on unsafe requests."""
    opt = request.route_handler.opt
    if opt.get("console_public"):
        if request.method not in SAFE_METHODS:
            pre = sessions.decode(request.cookies.get(sessions.PRE_COOKIE), signing_secret(request))
            if pre is None or not sessions.csrf_matches(pre, await _form_token(request)):
                raise ConsoleRefusal(
                    403,
                    "Form expired",
                    "the sign-in form has expired or was not sent from this site; reload it",
                )
        return None
    roles: tuple[str, ...] | None = opt.get("console_roles")
    if not roles:
        raise ConsoleRefusal(403, "Forbidden", "this page is open to no role")
    session = current_session(request)
    if session is None or session.key_id is None:
        return _sign_in_redirect(request)
    async with request.app.state.services.sessions() as db:
        found = await sessions.signed_in(db, session)
    if found is None or found.expired(datetime.now(UTC)):
        return _sign_in_redirect(request, "ended")
    request.scope["principal"] = found  # type: ignore[typeddict-unknown-key]
    request.scope["console_session"] = session  # type: ignore[typeddict-unknown-key]
    if not any(found.has(role) for role in roles):
        wanted = " or ".join(f"'{role}'" for role in roles)
        raise ConsoleRefusal(
            403,
            "Forbidden",
            f"this operation needs the role {wanted}; the key '{found.name}' has {sorted(found.roles)}",
        )
    if request.method not in SAFE_METHODS and not sessions.csrf_matches(session, await _form_token(request)):
        raise ConsoleRefusal(
            403, "Form expired", "the form's CSRF token is missing or stale; reload the page and try again"
        )
    return None


def secure(response: Response[Any]) -> Response[Any]:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


# --- rendering ---------------------------------------------------------------------------------------


def _num(value: Any, digits: int | None = None) -> str:
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if digits is None:
            digits = 0 if value.is_integer() else (1 if abs(value) >= 100 else 2)
        return f"{value:,.{digits}f}"
    return str(value)


def _when(value: Any) -> Markup:
    """A time for people: UTC in the page (readable without script), the viewer's zone once the script runs."""
    if value is None or value == "":
        return Markup("\u2013")
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return Markup(escape(str(value)))
    if moment.tzinfo is None:
        moment = moment.astimezone()
    utc = moment.astimezone(UTC)
    iso = utc.isoformat(timespec="seconds").replace("+00:00", "Z")
    shown = utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{0}" title="{1}">{1}</time>').format(iso, shown)


DROP_REASONS = {
    "ineligible_type": "its location type is not eligible under the policy",
    "not_pickup_location": "not the store chosen for pickup",
    "no_capability": "it cannot fulfil this way (capability missing)",
    "beyond_max_distance": "farther than the policy's maximum distance",
    "no_stock": "no stock",
    "below_floor": "its stock is at or below the channel floor",
    "below_low_stock_threshold": "its stock is below the low-stock threshold",
    "no_capacity": "no fulfilment capacity left today",
}


def _reason(code: Any) -> str:
    """A candidate's drop reason in words (the code stays in the tooltip)."""
    return DROP_REASONS.get(str(code), str(code).replace("_", " "))


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _short(value: Any) -> str:
    """A value read by a condition, as a person would write it."""
    if value is None:
        return "(missing)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float | int):
        return _num(value)
    return json.dumps(value, default=str)


def _query(request: Request[Any, Any, Any], **changes: Any) -> str:
    params = {k: v for k, v in request.query_params.items() if k not in changes and k != "notice"}
    params.update({k: v for k, v in changes.items() if v is not None})
    return "?" + urlencode(params)


def _environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        num=_num,
        when=_when,
        pretty=_pretty,
        short=_short,
        urlpart=quote,
        items_to_dict=dict,
        reason=_reason,
    )
    return environment


def console_templates() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(_environment()))


def render(
    request: Request[Any, Any, Any], template: str, status_code: int = 200, **context: Any
) -> Template:
    found = request.scope.get("principal")
    session = request.scope.get("console_session")
    notice = request.query_params.get("notice")
    context.setdefault("title", "")
    response = Template(
        template_name=template,
        context={
            **context,
            "principal": found if isinstance(found, Principal) else None,
            "nav": areas_for(found) if isinstance(found, Principal) else [],
            "csrf": session.csrf if isinstance(session, sessions.ConsoleSession) else "",
            "notice": NOTICES.get(notice or ""),
            "path": request.url.path,
            "query": lambda **changes: _query(request, **changes),
        },
        status_code=status_code,
        headers=SECURITY_HEADERS,
    )
    return response


def done(location: str, notice: str) -> Response[Any]:
    """After a successful action: back to a page, with a fixed message (the Post/Redirect/Get pattern)."""
    separator = "&" if "?" in location else "?"
    return secure(Redirect(f"{location}{separator}notice={notice}", status_code=303))


def problem_context(error: ServiceError) -> dict[str, Any]:
    """The API's refusal, as a page shows it: its title, its reason and each field error."""
    return {
        "title": error.title,
        "detail": error.detail,
        "errors": [
            {
                "field": e.field,
                "reason": e.reason,
                **{k: v for k, v in (e.extra or {}).items() if k in ("line", "column", "rule_id")},
            }
            for e in error.errors
        ],
        "status": error.status,
    }


def on_refusal(request: Request[Any, Any, Any], error: ConsoleRefusal) -> Response[Any]:
    if error.status == 401:
        return _sign_in_redirect(request)
    return render(
        request, "error.html", status_code=error.status, title=error.title, detail=error.detail, errors=[]
    )


def on_service_error(request: Request[Any, Any, Any], error: ServiceError) -> Response[Any]:
    problem = problem_context(error)
    return render(request, "error.html", status_code=error.status, **problem)


class Page:
    """One page of a list: `items`, and the numbers of the previous and next pages when there are any."""

    def __init__(self, items: list[Any], number: int, more: bool, total: int | None = None) -> None:
        self.items = items
        self.number = number
        self.previous = number - 1 if number > 1 else None
        self.next = number + 1 if more else None
        self.total = total


def page_number(request: Request[Any, Any, Any]) -> int:
    raw = request.query_params.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 1_000_000 else 1


def paginate(items: list[Any], number: int, size: int = PAGE_SIZE) -> Page:
    start = (number - 1) * size
    return Page(items[start : start + size], number, len(items) > start + size, len(items))
