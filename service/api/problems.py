"""Every error leaves the API as `application/problem+json` (RFC 9457) naming the failing field."""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from service.errors import FieldError, ServiceError

log = logging.getLogger("retail_policy.api")

PROBLEM = "application/problem+json"
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")


def problem(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    return Response(body, status_code=status, media_type=PROBLEM, headers=headers)


def _field_of(key: str | None, message: str) -> str:
    """Turn msgspec's location (`lines[0]`, `data`) plus its message into the failing field's path."""
    base = "" if key in (None, "data", "body") else str(key)
    for pattern in (_MISSING_FIELD, _UNKNOWN_FIELD):
        match = pattern.search(message)
        if match:
            return f"{base}.{match.group(1)}" if base else match.group(1)
    return base or "body"


def on_service_error(request: Request[Any, Any, Any], exc: ServiceError) -> Response[dict[str, Any]]:
    return problem(
        exc.status, exc.title, exc.detail, [e.to_dict() for e in exc.errors], exc.headers, request.url.path
    )


def on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    errors: list[dict[str, Any]] | None = None
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        errors = []
        for item in exc.extra:
            message = str(item.get("message", "invalid value")) if isinstance(item, dict) else str(item)
            key = item.get("key") if isinstance(item, dict) else None
            source = item.get("source") if isinstance(item, dict) else None
            name = _field_of(key, message)
            if source in ("query", "path", "header", "cookie"):
                name = f"{source}.{key}"
            errors.append(FieldError(name, message).to_dict())
        return problem(
            422,
            "Invalid request",
            "the request does not match the expected schema",
            errors,
            instance=request.url.path,
        )
    status = exc.status_code
    detail = str(exc.detail)
    title = {
        400: "Malformed request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not found",
        405: "Method not allowed",
        413: "Request too large",
        415: "Unsupported media type",
    }.get(status, detail)
    if status == 400:
        errors = [FieldError("body", detail).to_dict()]
    if status == 413:
        detail = "the request body is larger than the service accepts (MAX_BODY_BYTES)"
        errors = [FieldError("body", detail).to_dict()]
    headers = dict(exc.headers) if exc.headers else None
    return problem(status, title, detail, errors, headers, request.url.path)


def on_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.warning("backing service unavailable on %s: %s", request.url.path, exc)
    what = "Redis" if isinstance(exc, (RedisConnectionError, RedisTimeout)) else "the database"
    return problem(
        503,
        "Service unavailable",
        f"{what} cannot be reached; nothing was changed",
        None,
        {"Retry-After": "2"},
        request.url.path,
    )


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(
        500,
        "Internal error",
        "an unexpected error occurred; it has been logged",
        None,
        None,
        request.url.path,
    )


def exception_handlers() -> dict[type[Exception] | int, Any]:
    handlers: dict[type[Exception] | int, Any] = {
        ServiceError: on_service_error,
        HTTPException: on_http_exception,
        OperationalError: on_unavailable,
        PoolTimeout: on_unavailable,
        ConnectionError: on_unavailable,
        RedisConnectionError: on_unavailable,
        RedisTimeout: on_unavailable,
        OSError: on_unavailable,
        Exception: on_unexpected,
    }
    # asyncpg and aiosqlite connection failures surface as DBAPIError subclasses with connection_invalidated
    handlers[DBAPIError] = lambda request, exc: (
        on_unavailable(request, exc) if exc.connection_invalidated else on_unexpected(request, exc)
    )
    return handlers
