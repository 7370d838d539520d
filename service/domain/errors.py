"""Errors raised by the pure decision code: a bad input value, or a ruleset result the code cannot use."""

from __future__ import annotations

from service.errors import FieldError, Invalid, ServiceError


class InvalidInput(Invalid):
    """A request value is outside what a decision accepts (422); `field` names it as a JSON path."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", [FieldError(field, reason)])
        self.field = field
        self.reason = reason


class PolicyError(ServiceError):
    """The active ruleset produced a result the decision cannot apply: a misconfigured ruleset (500)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"ruleset result {key!r}: {reason}", (), 500, "Ruleset result not applicable")
        self.key = key
        self.reason = reason
