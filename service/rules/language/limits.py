"""Checks of the structural limits of durable_rules, so that a ruleset that would break it is refused.

durable_rules builds one chain of alpha conditions per alternative of each rule (an `or` makes one
alternative per branch), sharing equal leading conditions. It refuses more than 4096 rules, fails with
error 303 when more than 64 alpha conditions are true at once for one fact, and hangs (holding the GIL)
when one node has 512 or more children. The model here follows those chains to count both, erring on
the side of refusing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from service.rules.language.analysis import AllOf, AnyOf, Norm, Test, Truth, guarded_fields
from service.rules.language.document import Rule, Ruleset
from service.rules.language.problems import Problem
from service.rules.language.syntax import Literal

MAX_RULES = 4096
MAX_ALTERNATIVES = 4096
MAX_SIBLINGS = 499  # durable_rules hangs at 512; refuse at 500
MAX_CO_TRUE = 64


def alternatives(norm: Norm, cap: int) -> list[tuple[Test, ...]] | None:
    """The rule as an `or` of `and` chains (disjunctive normal form), None once more than `cap`."""
    if isinstance(norm, Truth):
        return [()] if norm.value else []
    if isinstance(norm, Test):
        return [(norm,)]
    if isinstance(norm, AnyOf):
        out: list[tuple[Test, ...]] = []
        for item in norm.items:
            sub = alternatives(item, cap)
            if sub is None:
                return None
            out.extend(sub)
            if len(out) > cap:
                return None
        return out
    assert isinstance(norm, AllOf)
    chains: list[tuple[Test, ...]] = [()]
    for item in norm.items:
        sub = alternatives(item, cap)
        if sub is None:
            return None
        chains = [c + s for c in chains for s in sub]
        if len(chains) > cap:
            return None
    return chains


@dataclass
class _Node:
    test: Test | None
    rule: Rule | None
    children: dict[str, _Node] = field(default_factory=dict)


def _co_true(node: _Node) -> int:
    """How many conditions under (and including) this node can hold at once, at most."""
    total = 0
    exclusive: dict[str, int] = {}
    for child in node.children.values():
        count = _co_true(child)
        t = child.test
        if t is not None and t.op == "==" and isinstance(t.rhs, Literal):
            # equality tests of one field against different constants never hold together
            exclusive[t.field] = max(exclusive.get(t.field, 0), count)
        else:
            total += count
    return total + sum(exclusive.values()) + (1 if node.test is not None else 0)


def _with_existence_checks(chain: tuple[Test, ...]) -> list[Test]:
    """The chain as durable_rules sees it: a field-to-field test is preceded by its not-null tests."""
    out: list[Test] = []
    for test in chain:
        for path in guarded_fields(test):
            out.append(Test("!=", path, Literal(None), f"{path} != null"))
        out.append(test)
    return out


def limit_problems(ruleset: Ruleset, normal: list[Norm]) -> list[Problem]:
    """Located errors for every durable_rules limit the ruleset crosses; empty when it fits."""
    problems: list[Problem] = []

    def add(path: str, message: str, rule: Rule | None = None) -> None:
        line, column = ruleset.position(path)
        problems.append(Problem(ruleset.source, line, column, rule.id if rule else None, path, message))

    if len(ruleset.rules) > MAX_RULES:
        add("rules", f"{len(ruleset.rules)} rules: durable_rules allows at most {MAX_RULES}")
        return problems
    for rule in ruleset.rules:
        if rule.priority > 65534 or rule.priority < 0:
            add(f"rules[{rule.index}].priority", "priority must be 0 to 65534", rule)
    root = _Node(None, None)
    total = 0
    crowded: set[int] = set()
    for rule in ruleset.rules:
        chains = alternatives(normal[rule.index], MAX_ALTERNATIVES)
        if chains is None or total + len(chains) > MAX_ALTERNATIVES:
            add(
                f"rules[{rule.index}].when",
                "the conditions expand to more than "
                f"{MAX_ALTERNATIVES} alternatives (each `or` branch and `in` item is one): simplify them",
                rule,
            )
            return problems
        total += len(chains)
        for chain in chains:
            node = root
            for test in _with_existence_checks(chain):
                child = node.children.get(test.text)
                if child is None:
                    child = _Node(test, rule)
                    node.children[test.text] = child
                    if len(node.children) > MAX_SIBLINGS and id(node) not in crowded:
                        crowded.add(id(node))
                        after = f" after '{node.test.text}'" if node.test else ""
                        add(
                            f"rules[{rule.index}].when",
                            f"more than {MAX_SIBLINGS} different conditions follow "
                            f"one another at the same place{after} (durable_rules hangs at 512): put a shared "
                            "condition first to split them into groups",
                            rule,
                        )
                node = child
    co_true = _co_true(root)
    if co_true > MAX_CO_TRUE:
        add(
            "rules",
            f"up to {co_true} conditions could be true at once for one request; durable_rules allows "
            f"{MAX_CO_TRUE}: use equality tests on the same field, or fewer overlapping ranges",
        )
    return problems
