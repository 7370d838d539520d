"""Errors the service's own layers raise, free of any web framework.

The API layer turns each into an `application/problem+json` response; domain, rules, stock and db code
raise these instead of HTTP exceptions so that they stay usable from the CLI and the simulator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One thing wrong with the input: where (`field`, a JSON path such as `lines[2].qty`) and why."""

    field: str
    reason: str
    extra: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "reason": self.reason}
        if self.extra:
            out.update(self.extra)
        return out


@dataclass
class ServiceError(Exception):
    """Base class: `status` is the HTTP status the API answers with."""

    detail: str
    errors: Sequence[FieldError] = field(default_factory=tuple)
    status: int = 500
    title: str = "Internal error"
    headers: dict[str, str] | None = None

    def __post_init__(self) -> None:
        super().__init__(self.detail)


class Invalid(ServiceError):
    """The request is well-formed but its content is not acceptable (422)."""

    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail, errors, 422, "Invalid request")


class Malformed(ServiceError):
    """The request cannot be parsed at all (400)."""

    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail, errors, 400, "Malformed request")


class NotFound(ServiceError):
    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail, errors, 404, "Not found")


class Conflict(ServiceError):
    """The request contradicts the current state (409): a reused idempotency key, a non-draft publish, short stock."""

    def __init__(self, detail: str, errors: Sequence[FieldError] = (), title: str = "Conflict") -> None:
        super().__init__(detail, errors, 409, title)


class Forbidden(ServiceError):
    def __init__(self, detail: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(detail, errors, 403, "Forbidden")


class Unavailable(ServiceError):
    """A backing service (Redis, the database) cannot be reached; nothing was changed (503)."""

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail, (), 503, "Service unavailable", {"Retry-After": str(retry_after)})
