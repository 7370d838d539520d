"""Errors raised by the pure decision code: a bad input value, or a ruleset result the code cannot use."""

from __future__ import annotations


class InvalidInput(ValueError):
    """A request value is outside what a decision accepts; `field` names it as a JSON path."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class PolicyError(ValueError):
    """The active ruleset produced a result the decision cannot apply (a misconfigured ruleset)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"ruleset result {key!r}: {reason}")
        self.key = key
        self.reason = reason
