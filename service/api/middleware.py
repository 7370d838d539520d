"""The app's one middleware: per HTTP request, the request metrics, the caller's key checked against the
route's roles, then the route; a direct route (`service.api.direct`) is answered here, without the
framework's per-request steps. One layer instead of one per concern: each layer costs a call, a scope
lookup and a wrapped `send` on every request.

A request that ends in an exception is counted with the status its problem answer gets
(`problems.status_of`): the app's exception handlers answer it further out.
"""

from __future__ import annotations

import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service.api.direct import call_direct, is_direct
from service.api.problems import status_of
from service.api.request_metrics import RequestMetrics
from service.security import check_access


class ApiMiddleware:
    """Tallies every HTTP request of its route in the app's `RequestMetrics` (except excluded paths),
    refuses callers without a role the route needs, and answers the route."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        if metrics.excluded is not None and metrics.excluded.search(scope["path"]):
            await check_access(scope)
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        route: str = scope["path_template"]
        status = 200
        metrics.started(method, route)
        started = time.perf_counter()
        try:
            await check_access(scope)
            if is_direct(scope["route_handler"]):
                status = await call_direct(scope, receive, send)
            else:

                async def sent(message: Message) -> None:
                    nonlocal status
                    if message["type"] == "http.response.start":
                        status = message["status"]
                    await send(message)

                await self.app(scope, receive, sent)
        except BaseException as exc:
            # the app's exception handlers answer it further out: count the status they will answer
            status = status_of(exc)
            raise
        finally:
            metrics.ended(method, route, status, time.perf_counter() - started)
