"""Reuse of rule evaluations on one immutable compiled ruleset version.

A ruleset's answer depends only on the values of the facts it declares (every field a rule reads is
declared) and on the trace level asked for. When none of those facts is a float (a money value or a rate
that differs with nearly every request, so a kept answer would rarely be asked for again), the evaluations
of the `none` and `rules` trace levels are kept, at most `LIMIT` of them, on the compiled version they came
from, and a request with the same fact values gets the kept answer again. The `full` trace is always
computed. A reused evaluation reports `elapsed_us` 0.0: no engine ran for it, and shares what callers
derived from the kept result (`Evaluation.derive`: an allocation's policy), so that is worked out once too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from service.rules.language import Evaluation, Evaluator
from service.rules.language.evaluation import MISSING, TraceLevel, make_getter

LIMIT = 512
REUSED_LEVELS = frozenset({"none", "rules"})


class EvaluationReuse:
    """The kept evaluations of one evaluator; `reusable` is False when its declared facts include a float."""

    __slots__ = ("_getters", "_kept", "reusable")

    def __init__(self, evaluator: Evaluator) -> None:
        declared: Mapping[str, str] = evaluator.compiled.ruleset.facts
        self.reusable = bool(declared) and all(
            kind in ("str", "int", "bool", "list[str]") for kind in declared.values()
        )
        self._getters: tuple[Callable[[Any], Any], ...] = tuple(
            make_getter(path) for path in sorted(declared)
        )
        self._kept: dict[tuple[Any, ...], Evaluation] = {}

    def key(self, facts: Mapping[str, Any], trace: TraceLevel) -> tuple[Any, ...] | None:
        """The key of these facts at this trace level, or None when they are not to be kept."""
        if not self.reusable or trace not in REUSED_LEVELS:
            return None
        key: list[Any] = [trace]
        for get in self._getters:
            value = get(facts)
            if isinstance(value, list):
                if not all(isinstance(v, str) for v in value):
                    return None
                value = tuple(value)
            elif value is not MISSING and not isinstance(value, str | int):  # bool is an int
                return None
            key.append(value.__class__)
            key.append(value)
        return tuple(key)

    def evaluate(self, evaluator: Evaluator, facts: Mapping[str, Any], trace: TraceLevel) -> Evaluation:
        key = self.key(facts, trace)
        if key is None:
            return evaluator.evaluate(facts, trace)
        kept = self._kept.get(key)
        if kept is not None:
            return Evaluation(
                result=kept.result,
                matched=kept.matched,
                used_default=kept.used_default,
                trace=kept.trace,
                engine=kept.engine,
                elapsed_us=0.0,
                ruleset=kept.ruleset,
                derived=kept.derived,
            )
        evaluation = evaluator.evaluate(facts, trace)
        if len(self._kept) < LIMIT:
            self._kept[key] = evaluation
        return evaluation

    def __len__(self) -> int:
        return len(self._kept)
