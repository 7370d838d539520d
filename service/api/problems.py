"""Every error leaves the API as `application/problem+json` (RFC 9457) naming the failing field.

Every problem carries a `correlation_id`, also sent as the `X-Correlation-ID` header: the caller's own
`X-Correlation-ID` or `X-Request-ID` when it is a short safe token, else a new one. Server-side faults
(5xx) answer a fixed detail that names no host, port, path or driver message; what went wrong is logged
with the same correlation id, so an operator finds the log line from the answer a client reports.
Problems about the caller's input keep naming the field and the reason.
"""

from __future__ import annotations

import logging
import re
import secrets
import sqlite3
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from service.errors import FieldError, ServiceError
from service.stock.service_errors import as_service_error
from service.stock.store import StockError

log = logging.getLogger("retail_policy.api")

PROBLEM = "application/problem+json"
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")
CORRELATION_HEADER = "X-Correlation-ID"
_INCOMING = ("x-correlation-id", "x-request-id")
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


def correlation_id(request: Request[Any, Any, Any]) -> str:
    """The id that ties this request's problem answer to its log lines (one per request)."""
    known = request.scope.get("correlation_id")
    if isinstance(known, str):
        return known
    chosen = next(
        (value for name in _INCOMING if _SAFE_TOKEN.match(value := request.headers.get(name, ""))),
        None,
    )
    chosen = chosen or secrets.token_hex(8)
    request.scope["correlation_id"] = chosen  # type: ignore[typeddict-unknown-key]
    return chosen


def problem(
    request: Request[Any, Any, Any],
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    cid = correlation_id(request)
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "correlation_id": cid,
    }
    if errors:
        body["errors"] = errors
    return Response(
        body, status_code=status, media_type=PROBLEM, headers={**(headers or {}), CORRELATION_HEADER: cid}
    )


def _field_of(key: str | None, message: str) -> str:
    """Turn msgspec's location (`lines[0]`, `data`) plus its message into the failing field's path."""
    base = "" if key in (None, "data", "body") else str(key)
    for pattern in (_MISSING_FIELD, _UNKNOWN_FIELD):
        match = pattern.search(message)
        if match:
            return f"{base}.{match.group(1)}" if base else match.group(1)
    return base or "body"


def _causes(exc: BaseException) -> list[BaseException]:
    """What led to `exc`, nearest first (at most 5 links: a chain is never walked without end)."""
    chain: list[BaseException] = []
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(chain) < 5:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    return chain


def on_service_error(request: Request[Any, Any, Any], exc: ServiceError) -> Response[dict[str, Any]]:
    if exc.status >= 500:
        # the detail is the service's own words; what caused it (a driver's message) goes to the log only
        log.warning(
            "%s %s answered %d [correlation_id=%s]: %s%s",
            request.method,
            request.url.path,
            exc.status,
            correlation_id(request),
            exc.detail,
            "".join(f" (caused by {type(cause).__name__}: {cause})" for cause in _causes(exc)),
        )
    return problem(request, exc.status, exc.title, exc.detail, [e.to_dict() for e in exc.errors], exc.headers)


def on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    errors: list[dict[str, Any]] | None = None
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        errors = []
        for item in exc.extra:
            message = str(item.get("message", "invalid value")) if isinstance(item, dict) else str(item)
            key = item.get("key") if isinstance(item, dict) else None
            source = item.get("source") if isinstance(item, dict) else None
            source = getattr(source, "value", source)  # Litestar gives a ParamType enum for parameters
            name = _field_of(key, message)
            if source in ("query", "path", "header", "cookie"):
                name = f"{source}.{key}"
            errors.append(FieldError(name, message).to_dict())
        return problem(
            request, 422, "Invalid request", "the request does not match the expected schema", errors
        )
    status = exc.status_code
    if status >= 500:  # the framework's own detail may name internals: log it, answer the status alone
        log.error(
            "%s %s answered %d [correlation_id=%s]",
            request.method,
            request.url.path,
            status,
            correlation_id(request),
            exc_info=exc,
        )
        retry = (
            {"Retry-After": exc.headers["Retry-After"]}
            if exc.headers and "Retry-After" in exc.headers
            else None
        )
        return problem(
            request, status, _phrase(status), "the service could not answer; it has been logged", None, retry
        )
    detail = str(exc.detail)
    title = {
        400: "Malformed request",
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not found",
        405: "Method not allowed",
        413: "Request too large",
        415: "Unsupported media type",
    }.get(status) or _phrase(status)
    if status == 400:
        errors = [FieldError("body", detail).to_dict()]
    if status == 413:
        detail = "the request body is larger than the service accepts (MAX_BODY_BYTES)"
        errors = [FieldError("body", detail).to_dict()]
    headers = dict(exc.headers) if exc.headers else None
    return problem(request, status, title, detail, errors, headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def on_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    what = "Redis" if isinstance(exc, (RedisConnectionError, RedisTimeout)) else "the database"
    log.warning(
        "%s %s answered 503, %s unavailable [correlation_id=%s]: %s: %s",
        request.method,
        request.url.path,
        what,
        correlation_id(request),
        type(exc).__name__,
        exc,
    )
    return problem(
        request,
        503,
        "Service unavailable",
        f"{what} cannot be reached; nothing was changed",
        None,
        {"Retry-After": "2"},
    )


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.error(
        "unexpected error on %s %s [correlation_id=%s]",
        request.method,
        request.url.path,
        correlation_id(request),
        exc_info=exc,
    )
    return problem(request, 500, "Internal error", "an unexpected error occurred; it has been logged")


def on_stock_error(request: Request[Any, Any, Any], exc: StockError) -> Response[dict[str, Any]]:
    """A stock store error met by any handler, in the words of the one mapping (`as_service_error`)."""
    return on_service_error(request, as_service_error(exc))


# what answers 503 with Retry-After: a store that cannot be reached or is busy. A SQLite error raised by the
# file's own writer (service.db.sqlite_writer: the write lock held past its timeout, the file unwritable)
# is the driver's OperationalError, the same one SQLAlchemy wraps as its own for the engine's connections.
_UNAVAILABLE = (
    OperationalError,
    sqlite3.OperationalError,
    PoolTimeout,
    ConnectionError,
    RedisConnectionError,
    RedisTimeout,
    OSError,
)


def status_of(exc: BaseException) -> int:
    """The status the handler `exception_handlers` maps `exc` to answers with (for the request metrics)."""
    if isinstance(exc, ServiceError):
        return exc.status
    if isinstance(exc, StockError):
        return as_service_error(exc).status
    if isinstance(exc, HTTPException):
        return exc.status_code
    if isinstance(exc, _UNAVAILABLE):
        return 503
    if isinstance(exc, DBAPIError):
        return 503 if exc.connection_invalidated else 500
    return 500


def exception_handlers() -> dict[type[Exception] | int, Any]:
    handlers: dict[type[Exception] | int, Any] = {
        ServiceError: on_service_error,
        StockError: on_stock_error,
        HTTPException: on_http_exception,
        OperationalError: on_unavailable,
        sqlite3.OperationalError: on_unavailable,
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
