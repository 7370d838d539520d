"""Checking a request's facts against the types a ruleset declares, before evaluating it.

The engines assume the declared types: durable_rules compares "2" < 3 as numbers while Python refuses
to, so input that did not come from our own decision code (a dry run through the API) is checked first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.rules.language.document import Ruleset
from service.rules.language.syntax import MAX_INTEGER

MAX_FACTS_DEPTH = 16
_MISSING = object()


def facts_bound_problem(facts: Mapping[str, Any]) -> tuple[str, str] | None:
    """(path, reason) of the first place the facts cross their bounds, if any: nested more than
    `MAX_FACTS_DEPTH` levels, or a whole number beyond the range expressions compute in. Walked without
    recursion, so that no depth can exhaust the stack here."""
    stack: list[tuple[str, Any, int]] = [("facts", facts, 1)]
    while stack:
        path, value, depth = stack.pop()
        if isinstance(value, Mapping | list):
            if depth > MAX_FACTS_DEPTH:
                return path, f"the facts nest more than {MAX_FACTS_DEPTH} levels deep here"
            items = value.items() if isinstance(value, Mapping) else enumerate(value)
            for key, item in items:
                child = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}"
                stack.append((child, item, depth + 1))
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
            return path, f"a whole number beyond {MAX_INTEGER} (2**53 - 1) either way"
    return None


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
