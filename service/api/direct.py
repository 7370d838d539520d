"""Direct routes: handlers the app's middleware calls itself, without Litestar's per-request machinery.

A handler marked `opt=direct()` takes `request`, its body as `data`, text path parameters
(`case_id: FromPath[str]`, declared `{case_id:str}` in its path) and optional text query parameters
(`name: str | None = None`, e.g. `trace`), and answers with the route's `JsonAnswer`. For such a handler
the framework's generic steps (the kwargs and signature models, resolving the response) cost more than
the decision itself on a small request, so `call_direct` runs the same steps in a fixed order: the
request class, the app's `before_request` (except `require_body`, whose refusal of an empty body
`StrictRequest.json` makes in the same words), the body decoded by `StrictRequest.json`, the query values
as Litestar reads them (the last of a repeated name, blank values left out), the handler, the answer
encoded once. Errors propagate to the app's exception handlers, which answer them as for any route.

Whether a handler fits is checked once, on its first request (`plan`): anything the direct call would
skip (guards, dependencies, another response class, response headers or cookies, after-request hooks, a
parameter of another kind) makes it refuse loudly instead of answering differently.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.params import PathParameter, QueryParameter
from litestar.response import Response
from litestar.types import Receive, Scope, Send

from service.api.body import StrictRequest, require_body
from service.api.encoded import JsonAnswer, encoded

_DIRECT = "direct"
_PATH_PARAMETER = re.compile(r"\{\s*(\w+)\s*:\s*(\w+)\s*\}")  # `{name:type}` in a handler's path
_PLAN = "direct_plan"  # the key of a handler's plan in its `opt`, made on its first request
# what the framework would check of a query parameter's value (the direct call checks none of it)
_CONSTRAINTS = (
    "const", "gt", "ge", "lt", "le", "multiple_of", "min_items", "max_items", "min_length", "max_length",
    "pattern", "lower_case", "upper_case",
)  # fmt: skip


def direct() -> dict[str, Any]:
    """The `opt` that marks a route handler for `call_direct`."""
    return {_DIRECT: True}


def is_direct(handler: Any) -> bool:
    return bool(handler.opt.get(_DIRECT))


@dataclass(frozen=True)
class Plan:
    """How to call one direct handler: its query parameters (name in the query, argument), its path
    parameters (name in the path, argument), status, and the `before_request` hook to run."""

    query: tuple[tuple[str, str], ...]
    status: int
    path: tuple[tuple[str, str], ...] = ()
    before: Callable[[Any], Awaitable[Any]] | None = None


def plan(handler: HTTPRouteHandler) -> Plan:
    """The handler's plan, made (and checked) on its first request and kept in its `opt`."""
    found: Plan | None = handler.opt.get(_PLAN)
    if found is None:
        found = handler.opt[_PLAN] = _make_plan(handler)
    return found


def _make_plan(handler: HTTPRouteHandler) -> Plan:
    parameters = handler.parsed_fn_signature.parameters
    dependencies = handler.resolve_dependencies()
    used = [key for key in parameters if key in dependencies]
    skipped = {
        "guards": handler.resolve_guards(),
        f"dependencies ({', '.join(used)})": used,
        "response headers": handler.resolve_response_headers(),
        "response cookies": handler.resolve_response_cookies(),
        "an after-request hook": any(layer.after_request for layer in handler.ownership_layers),
        "an after-response hook": handler.resolve_after_response(),
        "background tasks": handler.background,
        "a return DTO": handler.resolve_return_dto(),
        "a data DTO": handler.resolve_data_dto(),
        "a response class other than JsonAnswer": handler.resolve_response_class() is not JsonAnswer,
        "no `request` or `data` parameter": "request" not in parameters or "data" not in parameters,
    }
    found = [what for what, value in skipped.items() if value]
    query: list[tuple[str, str]] = []
    path: list[tuple[str, str]] = []
    # the path's parameters as the router parses them: `{name:str}` gives the text itself
    in_path = {name: kind for route in handler.paths for name, kind in _PATH_PARAMETER.findall(route)}
    for key, field in parameters.items():
        if key in ("request", "data") or key in dependencies:
            continue
        kwarg = field.kwarg_definition
        name = getattr(kwarg, "name", None) or key  # the name in the path or query
        constrained = kwarg is not None and any(getattr(kwarg, n) is not None for n in _CONSTRAINTS)
        if isinstance(kwarg, PathParameter) or (kwarg is None and key in in_path):
            if in_path.get(name) != "str" or field.annotation is not str:
                found.append(f"parameter {key!r} is not a `str` path parameter")
            elif constrained:
                found.append(f"parameter {key!r} has constraints")
            else:
                path.append((name, key))
        elif kwarg is not None and not isinstance(kwarg, QueryParameter):
            found.append(f"parameter {key!r} is not a query parameter")
        elif field.annotation != str | None or field.default is not None:
            found.append(f"parameter {key!r} is not `str | None = None`")
        elif constrained:
            found.append(f"parameter {key!r} has constraints")
        else:
            query.append((name, key))
    if found:
        raise TypeError(f"the handler {handler.handler_name!r} cannot be called directly: {', '.join(found)}")
    before = handler.resolve_before_request()
    if before is require_body and not hasattr(parameters["data"].annotation, "from_media"):
        # `StrictRequest.json` refuses an empty required JSON body in the same words, reading it once
        before = None
    return Plan(tuple(query), handler.status_code, tuple(path), before)


async def call_direct(scope: Scope, receive: Receive, send: Send) -> int:
    """Answer the request with its direct handler (`scope["route_handler"]`); the status it answered."""
    handler: HTTPRouteHandler = scope["route_handler"]  # type: ignore[assignment]
    how = plan(handler)
    request = StrictRequest(scope, receive, send)
    before = how.before
    if before is not None and await before(request) is not None:
        raise TypeError(f"the before_request hook answered for the direct handler {handler.handler_name!r}")
    kwargs: dict[str, Any] = {"request": request, "data": await request.json()}
    if how.path:
        values = scope["path_params"]
        for name, argument in how.path:
            kwargs[argument] = values[name]
    if how.query:
        raw = scope.get("query_string", b"")
        # as the framework reads a query: latin-1, blank values kept, the last of a repeated name
        values = dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True, separator="&")) if raw else {}
        for name, argument in how.query:
            kwargs[argument] = values.get(name)
    answer = await handler.fn(**kwargs)
    if isinstance(answer, Response):
        response = answer.to_asgi_response(None, request)
    else:  # what the route's JsonAnswer would send
        response = encoded(answer, how.status)
    await response(scope, receive, send)
    status: int = response.status_code
    return status
