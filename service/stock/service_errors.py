"""What each stock store error means to a caller of the service: one mapping for the API, the use cases
and the CLI, so a refusal reads the same whichever path met it."""

from __future__ import annotations

import re

from service.errors import Conflict, FieldError, Invalid, NotFound, ServiceError, Unavailable
from service.stock.store import (
    IdempotencyConflict,
    InvalidStockInput,
    ReservationNotFound,
    ReservationStateError,
    StockError,
    StockStateLost,
    StockUnavailable,
)

UNREACHABLE = "the stock store cannot be reached; nothing was changed"


def as_service_error(error: StockError) -> ServiceError:
    """The service error for `error`, caused by it (so the log shows the store's own words)."""
    mapped = _mapped(error)
    mapped.__cause__ = error
    return mapped


def _mapped(error: StockError) -> ServiceError:
    if isinstance(error, StockStateLost):
        # says what happens and that nothing changed: no address, no driver message
        return Unavailable(str(error), error.retry_after)
    if isinstance(error, StockUnavailable):
        # the store's message may name Redis's or the database's address: it is logged, never answered
        return Unavailable(UNREACHABLE, error.retry_after)
    if isinstance(error, InvalidStockInput):
        # The bodies are bare lists, so `events[2].qty` is `[2].qty` to the caller.
        field = re.sub(r"^(rows|events)(?=\[)", "", error.field)
        return Invalid(f"{field}: {error.reason}", [FieldError(field, error.reason)])
    if isinstance(error, IdempotencyConflict):
        return Conflict(
            "the idempotency key was already used with another request",
            [FieldError("idempotency_key", str(error) or "already used with another request")],
            title="Idempotency key reused",
        )
    if isinstance(error, ReservationNotFound):
        return NotFound(str(error), [FieldError("id", "unknown")])
    if isinstance(error, ReservationStateError):
        return Conflict(str(error), [FieldError("status", f"reservation is {error.status}")])
    return ServiceError("the stock store failed; it has been logged")
