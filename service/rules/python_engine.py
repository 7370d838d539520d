"""The Python engine: the rules' conditions as closures, tried in firing order."""

from __future__ import annotations

from service.rules.evaluation import CompiledRule, CompiledRuleset, Evaluator, Facts


class PythonEvaluator(Evaluator):
    """First hit stops at the highest-priority match; collect keeps every match, in firing order."""

    engine = "python"

    def __init__(self, compiled: CompiledRuleset, version: int = 0) -> None:
        super().__init__(compiled, version)
        self._rules = tuple((r.predicate, r) for r in compiled.rules)
        self._first = compiled.hit_policy == "first"

    def match(self, facts: Facts) -> list[CompiledRule]:
        if self._first:
            for predicate, rule in self._rules:
                if predicate(facts):
                    return [rule]
            return []
        return [rule for predicate, rule in self._rules if predicate(facts)]
