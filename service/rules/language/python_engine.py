"""The Python engine: the rules' conditions as closures, tried in firing order.

Large rulesets are usually keyed on a few fields (`source.type == "dc" and ...`). Rules whose condition
requires `field == constant` are indexed by that constant, so a request only tries the rules whose key
its value selects (plus the unkeyed ones); the full condition still decides, the index only skips rules
that cannot match.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from service.rules.language.analysis import AllOf, Norm, Test
from service.rules.language.evaluation import (
    MISSING,
    CompiledRule,
    CompiledRuleset,
    Evaluator,
    Facts,
    Getter,
    make_getter,
)
from service.rules.language.syntax import Literal

INDEX_FROM = 16  # below this many rules, trying each one is as fast as the index


def _key_test(norm: Norm) -> Test | None:
    """An equality with a constant that the whole condition requires, if there is one."""
    candidates = norm.items if isinstance(norm, AllOf) else (norm,)
    for item in candidates:
        if (
            isinstance(item, Test)
            and item.op == "=="
            and isinstance(item.rhs, Literal)
            and item.rhs.value is not None
        ):
            return item
    return None


class PythonEvaluator(Evaluator):
    """First hit stops at the highest-priority match; collect keeps every match, in firing order."""

    engine = "python"

    def __init__(self, compiled: CompiledRuleset, version: int = 0) -> None:
        super().__init__(compiled, version)
        self._rules = tuple((r.predicate, r) for r in compiled.rules)
        self._first = compiled.hit_policy == "first"
        self._index: tuple[tuple[Getter, dict[Any, tuple[int, ...]]], ...] = ()
        self._unkeyed: frozenset[int] = frozenset()
        if len(compiled.rules) >= INDEX_FROM:
            self._build_index(compiled.rules)

    def _build_index(self, rules: list[CompiledRule]) -> None:
        by_field: dict[str, dict[Any, list[int]]] = {}
        unkeyed: list[int] = []
        for position, rule in enumerate(rules):
            key = _key_test(rule.norm)
            if key is None:
                unkeyed.append(position)
            else:
                by_field.setdefault(key.field, {}).setdefault(key.rhs.value, []).append(position)  # type: ignore[union-attr]
        if not by_field:
            return
        self._index = tuple(
            (make_getter(field), {value: tuple(positions) for value, positions in table.items()})
            for field, table in by_field.items()
        )
        self._unkeyed = frozenset(unkeyed)

    def _candidates(self, facts: Facts) -> list[int] | None:
        """Positions (in firing order) of the rules the request can match; None to try them all."""
        selected = set(self._unkeyed)
        for get, table in self._index:
            value = get(facts)
            if value is MISSING or value is None:
                continue
            if not isinstance(value, Hashable):
                return None
            try:
                selected.update(table.get(value, ()))
            except TypeError:
                return None
        return sorted(selected)

    def match(self, facts: Facts) -> list[CompiledRule]:
        rules = self._rules
        if self._index:
            positions = self._candidates(facts)
            if positions is not None:
                if self._first:
                    for position in positions:
                        predicate, rule = rules[position]
                        if predicate(facts):
                            return [rule]
                    return []
                return [rules[p][1] for p in positions if rules[p][0](facts)]
        if self._first:
            for predicate, rule in rules:
                if predicate(facts):
                    return [rule]
            return []
        return [rule for predicate, rule in rules if predicate(facts)]
