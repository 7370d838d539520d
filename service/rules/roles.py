"""Approver roles a ruleset routes to must be roles an API key can hold.

The ruleset language knows result keys and their types, not who approves: this check, run by
`check_ruleset` before a version is stored or published, compares the literal `approvers` and
`escalation` lists of every rule and of the default with the approver roles of the approval workflow
(`service.domain.cases.APPROVER_ROLES`). A case routed to a role nobody holds would wait for nobody until
its SLA ran out. Computed lists (`= expression`) are checked when a case opens.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from service.domain.cases import APPROVER_ROLES
from service.rules.language import Problem, Ruleset

ROLE_KEYS = ("approvers", "escalation")


def approver_role_problems(ruleset: Ruleset) -> list[Problem]:
    """One error per role, in `approvers` or `escalation`, that is not an approver role."""
    allowed = ", ".join(APPROVER_ROLES)
    found: list[Problem] = []
    for path, rule_id, then in _results(ruleset):
        for key in ROLE_KEYS:
            value = then.get(key)
            if not isinstance(value, list):  # absent, or computed by an expression
                continue
            for index, role in enumerate(value):
                if role in APPROVER_ROLES:
                    continue
                where = f"{path}.{key}"
                line, column = ruleset.position(f"{where}[{index}]")
                message = f"'{key}': {role!r} is not an approver role (one of {allowed})"
                found.append(Problem(ruleset.source, line, column, rule_id, where, message))
    return found


def _results(ruleset: Ruleset) -> Iterator[tuple[str, str | None, dict[str, Any]]]:
    for index, rule in enumerate(ruleset.rules):
        yield f"rules[{index}].then", rule.id, rule.then
    if ruleset.default:
        yield "default", None, ruleset.default
