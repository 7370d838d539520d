"""Direct routes (`service.api.direct`): the app's middleware answers a handler marked `direct()` itself,
with the same body decoding, query reading and answer as the framework's path; a handler with anything
that path would skip is refused on its first request instead of answered differently."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import pytest
from litestar import Litestar, Request, Router, post
from litestar.di import NamedDependency, Provide
from litestar.middleware import DefineMiddleware
from litestar.params import FromPath, JSONBody, QueryParameter

from service.api.body import StrictRequest, require_body
from service.api.direct import direct, plan
from service.api.encoded import JsonAnswer
from service.api.middleware import ApiMiddleware
from service.api.problems import on_service_error
from service.api.request_metrics import RequestMetrics
from service.errors import ServiceError
from tests.unit.asgi_post import asgi_post


class Order(msgspec.Struct, forbid_unknown_fields=True):
    sku: str
    qty: int


class Taken(msgspec.Struct):
    sku: str
    qty: int
    mode: str | None


Mode = Annotated[str | None, QueryParameter(name="mode")]


@post("/orders", opt=direct(), status_code=201)
async def take(request: Request[Any, Any, Any], data: JSONBody[Order], mode: Mode = None) -> Taken:
    return Taken(data.sku, data.qty, mode)


@post("/framework", status_code=201)
async def take_by_framework(
    request: Request[Any, Any, Any], data: JSONBody[Order], mode: Mode = None
) -> Taken:
    return Taken(data.sku, data.qty, mode)


@post("/guarded", opt=direct(), guards=[lambda connection, handler: None])
async def guarded(request: Request[Any, Any, Any], data: JSONBody[Order]) -> Taken:
    return Taken(data.sku, data.qty, None)


@post("/counted", opt=direct(), dependencies={"count": Provide(lambda: 1, sync_to_thread=False)})
async def counted(
    request: Request[Any, Any, Any], data: JSONBody[Order], count: NamedDependency[int]
) -> Taken:
    return Taken(data.sku, data.qty, str(count))


@post("/bounded", opt=direct())
async def bounded(
    request: Request[Any, Any, Any],
    data: JSONBody[Order],
    mode: Annotated[str | None, QueryParameter(name="mode", max_length=3)] = None,
) -> Taken:
    return Taken(data.sku, data.qty, mode)


@post("/named/{name:str}", opt=direct(), status_code=201)
async def take_named(request: Request[Any, Any, Any], data: JSONBody[Order], name: FromPath[str]) -> Taken:
    return Taken(data.sku, data.qty, name)


@post("/framework-named/{name:str}", status_code=201)
async def take_named_by_framework(
    request: Request[Any, Any, Any], data: JSONBody[Order], name: FromPath[str]
) -> Taken:
    return Taken(data.sku, data.qty, name)


@post("/numbered/{n:int}", opt=direct())
async def numbered(request: Request[Any, Any, Any], data: JSONBody[Order], n: FromPath[int]) -> Taken:
    return Taken(data.sku, data.qty, str(n))


def app(**options: Any) -> Litestar:
    metrics = RequestMetrics("retail_policy", "direct_routes_test")
    router = Router(
        "/",
        route_handlers=[
            take,
            take_by_framework,
            guarded,
            counted,
            bounded,
            take_named,
            take_named_by_framework,
            numbered,
        ],
        response_class=JsonAnswer,
    )
    return Litestar(
        [router],
        request_class=StrictRequest,
        middleware=[DefineMiddleware(ApiMiddleware, metrics=metrics)],
        **options,
    )


async def call(target: Litestar, path: str, query: bytes, body: bytes) -> tuple[int, bytes]:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return await asgi_post(target, path, headers, [body], query)


@pytest.mark.parametrize(
    ("query", "body"),
    [
        (b"", b'{"sku": "A", "qty": 2}'),
        (b"mode=fast", b'{"sku": "A", "qty": 2}'),
        (b"mode=fast&mode=slow", b'{"sku": "A", "qty": 2}'),  # the last of a repeated name
        (b"mode=", b'{"sku": "A", "qty": 2}'),  # a blank value is kept
        (b"mode=%66ast&other=1", b'{"sku": "A", "qty": 2}'),
        (b"", b'{"sku": "A", "qty": "2"}'),
        (b"", b'{"sku": "A", "qty": 2, "extra": 1}'),
        (b"", b"{"),
    ],
)
async def test_a_direct_route_answers_as_the_framework_would(query: bytes, body: bytes) -> None:
    target = app()
    assert await call(target, "/orders", query, body) == await call(target, "/framework", query, body)


@pytest.mark.parametrize("name", ["a", "a b", "café", "x.y-z"])
async def test_a_direct_route_reads_a_text_path_parameter_as_the_framework_would(name: str) -> None:
    target = app()
    body = b'{"sku": "A", "qty": 2}'
    direct_answer = await call(target, f"/named/{name}", b"", body)
    assert direct_answer == await call(target, f"/framework-named/{name}", b"", body)
    assert direct_answer[0] == 201
    assert target.route_handler_method_map["/named/{name:str}"]["POST"].opt.get("direct_plan") is not None


async def test_a_direct_route_is_answered_by_the_middleware() -> None:
    target = app()
    status, body = await call(target, "/orders", b"mode=fast", b'{"sku": "A", "qty": 2}')
    assert (status, msgspec.json.decode(body)) == (201, {"sku": "A", "qty": 2, "mode": "fast"})
    # its plan was made on that first request: by the direct call, which the framework's path never makes
    assert target.route_handler_method_map["/orders"]["POST"].opt.get("direct_plan") is not None
    await call(target, "/framework", b"", b'{"sku": "A", "qty": 2}')
    assert target.route_handler_method_map["/framework"]["POST"].opt.get("direct_plan") is None


@pytest.mark.parametrize("body", [b"", b"  \n"])
async def test_a_direct_route_refuses_an_empty_body_as_the_app_hook_would_without_running_it(
    body: bytes,
) -> None:
    target = app(before_request=require_body, exception_handlers={ServiceError: on_service_error})
    direct_status, direct_answer = await call(target, "/orders", b"", body)
    framework_status, framework_answer = await call(target, "/framework", b"", body)
    assert direct_status == framework_status == 400
    assert msgspec.json.decode(direct_answer)["errors"] == msgspec.json.decode(framework_answer)["errors"]
    assert msgspec.json.decode(direct_answer)["errors"] == [{"field": "body", "reason": "empty body"}]
    # the body is read once: `StrictRequest.json` makes the hook's refusal itself
    assert plan(target.route_handler_method_map["/orders"]["POST"]).before is None


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/guarded", "guards"),
        ("/counted", r"dependencies \(count\)"),
        ("/bounded", "has constraints"),
        ("/numbered/{n:int}", "not a `str` path parameter"),
    ],
)
async def test_a_handler_the_direct_call_would_answer_differently_is_refused(path: str, reason: str) -> None:
    target = app()
    handler = target.route_handler_method_map[path]["POST"]
    with pytest.raises(TypeError, match=reason):
        plan(handler)
    status, _ = await call(target, path.replace("{n:int}", "1"), b"", b'{"sku": "A", "qty": 2}')
    assert status == 500
