"""Checking a request's facts against the types a ruleset declares, before evaluating it.

The engines assume the declared types: durable_rules compares "2" < 3 as numbers while Python refuses
to, so input that did not come from our own decision code (a dry run through the API) is checked first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.rules.document import Ruleset

_MISSING = object()


def _fits(type_name: str, value: Any) -> bool:
    if value is None:
        return True  # a null only ever matches `== null`, the same in both engines
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if type_name == "str":
        return isinstance(value, str)
    if type_name == "bool":
        return isinstance(value, bool)
    if type_name == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return False


def fact_problems(ruleset: Ruleset, facts: Mapping[str, Any]) -> list[str]:
    """One message per declared field present with a value of another type (missing fields are fine)."""
    problems: list[str] = []
    for path, type_name in ruleset.facts.items():
        value: Any = facts
        for part in path.split("."):
            value = value.get(part, _MISSING) if isinstance(value, Mapping) else _MISSING
            if value is _MISSING:
                break
        if value is not _MISSING and not _fits(type_name, value):
            problems.append(f"{path}: expected {type_name}, found {type(value).__name__} {value!r}")
    return problems
