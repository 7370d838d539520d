"""What both engines share: the rules compiled to Python closures, `then` values, traces, the result record.

An engine only decides which rules matched; computing the result, the default and the trace is done
here, the same way for both, so the engines cannot drift apart on anything but matching.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any
from typing import Literal as TypingLiteral

from service.rules.analysis import AllOf, Norm, Test, Truth, firing_order, tests_of
from service.rules.document import Ruleset
from service.rules.problems import RuleEvaluationError
from service.rules.syntax import Arith, Call, Expr, Field, ListLiteral, Literal, fields_of

TraceLevel = TypingLiteral["none", "rules", "full"]
Facts = Mapping[str, Any]
Getter = Callable[[Facts], Any]
Predicate = Callable[[Facts], bool]


class _Missing:
    """Marks a field absent from the facts."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}


def _round(x: Any, digits: Any = None) -> Any:
    return round(x) if digits is None else round(x, digits)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "ceil": math.ceil,
    "floor": math.floor,
    "round": _round,
}


def make_getter(path: str) -> Getter:
    """A reader of one field path; returns MISSING when any step is absent or not a mapping."""
    parts = path.split(".")
    if len(parts) == 1:
        (a,) = parts

        def get1(facts: Facts) -> Any:
            try:
                return facts[a]
            except (KeyError, TypeError, IndexError):
                return MISSING

        return get1
    if len(parts) == 2:
        a, b = parts

        def get2(facts: Facts) -> Any:
            try:
                return facts[a][b]
            except (KeyError, TypeError, IndexError):
                return MISSING

        return get2

    def get_n(facts: Facts) -> Any:
        value: Any = facts
        try:
            for p in parts:
                value = value[p]
        except (KeyError, TypeError, IndexError):
            return MISSING
        return value

    return get_n


def make_value(expr: Expr) -> Getter:
    """A closure computing an expression; MISSING when a field it reads is absent."""
    if isinstance(expr, Literal):
        constant = expr.value
        return lambda facts: constant
    if isinstance(expr, Field):
        return make_getter(expr.path)
    if isinstance(expr, Arith):
        fn = ARITH[expr.op]
        left, right = make_value(expr.left), make_value(expr.right)

        def arith(facts: Facts) -> Any:
            lv = left(facts)
            if lv is MISSING:
                return MISSING
            rv = right(facts)
            if rv is MISSING:
                return MISSING
            return fn(lv, rv)

        return arith
    if isinstance(expr, Call):
        func = FUNCTIONS[expr.name]
        args = [make_value(a) for a in expr.args]

        def call(facts: Facts) -> Any:
            values = [a(facts) for a in args]
            if any(v is MISSING for v in values):
                return MISSING
            return func(*values)

        return call
    if isinstance(expr, ListLiteral):
        items = [i.value for i in expr.items]
        return lambda facts: list(items)
    raise TypeError(f"not an expression: {expr!r}")


def make_test(test: Test) -> Predicate:
    compare = COMPARE[test.op]
    parts = test.field.split(".")
    if isinstance(test.rhs, Literal) and len(parts) == 2:
        # the common case, inlined: `root.leaf op constant`
        a, b = parts
        constant = test.rhs.value
        if test.op in ("==", "!="):
            equal = test.op == "=="

            def test_equality(facts: Facts) -> bool:
                try:
                    value = facts[a][b]
                except (KeyError, TypeError, IndexError):
                    return False
                return (value == constant) is equal

            return test_equality

        def test_order(facts: Facts) -> bool:
            try:
                return bool(compare(facts[a][b], constant))
            except (KeyError, TypeError, IndexError):
                return False

        return test_order
    get = make_getter(test.field)
    if isinstance(test.rhs, Literal):
        literal = test.rhs.value

        def test_constant(facts: Facts) -> bool:
            value = get(facts)
            if value is MISSING:
                return False
            try:
                return bool(compare(value, literal))
            except TypeError:
                return False

        return test_constant
    rhs = make_value(test.rhs)

    def test_expr(facts: Facts) -> bool:
        value = get(facts)
        if value is MISSING:
            return False
        try:
            other = rhs(facts)
            if other is MISSING:
                return False
            return bool(compare(value, other))
        except (TypeError, ArithmeticError):
            return False

    return test_expr


def _both(p: Predicate, q: Predicate) -> Predicate:
    return lambda facts: p(facts) and q(facts)


def _either(p: Predicate, q: Predicate) -> Predicate:
    return lambda facts: p(facts) or q(facts)


def make_predicate(norm: Norm) -> Predicate:
    """The condition as nested closures that stop at the first deciding part."""
    if isinstance(norm, Test):
        return make_test(norm)
    if isinstance(norm, Truth):
        value = norm.value
        return lambda facts: value
    parts = [make_predicate(i) for i in norm.items]
    join = _both if isinstance(norm, AllOf) else _either
    predicate = parts[-1]
    for part in reversed(parts[:-1]):
        predicate = join(part, predicate)
    return predicate


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a fact value for traces (MISSING becomes None)."""
    return None if value is MISSING else value


@dataclass(slots=True)
class CompiledRule:
    id: str
    priority: int
    index: int
    norm: Norm
    predicate: Predicate
    fields: tuple[tuple[str, Getter], ...]
    literal_then: dict[str, Any]
    computed_then: tuple[tuple[str, Getter], ...]
    then_order: tuple[str, ...]
    tests: tuple[tuple[Test, Predicate, Getter, Getter], ...]

    def values(self, facts: Facts) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self.then_order:
            if key in self.literal_then:
                v = self.literal_then[key]
                out[key] = list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v
        for key, fn in self.computed_then:
            try:
                v = fn(facts)
            except (TypeError, ArithmeticError, ValueError) as exc:
                raise RuleEvaluationError(f"rule '{self.id}': cannot compute '{key}': {exc}") from None
            if v is MISSING:
                raise RuleEvaluationError(
                    f"rule '{self.id}': cannot compute '{key}': a field it reads is missing"
                )
            out[key] = v
        return out

    def field_values(self, facts: Facts) -> dict[str, Any]:
        return {path: _plain(get(facts)) for path, get in self.fields}

    def condition_table(self, facts: Facts) -> list[dict[str, Any]]:
        rows = []
        for test, predicate, left, right in self.tests:
            lv, rv = left(facts), right(facts)
            row: dict[str, Any] = {
                "condition": test.text,
                "result": predicate(facts),
                "left": _plain(lv),
                "right": _plain(rv),
            }
            if lv is MISSING or rv is MISSING:
                row["missing"] = True
            rows.append(row)
        return rows


def _safe_value(fn: Getter) -> Getter:
    def read(facts: Facts) -> Any:
        try:
            return fn(facts)
        except (TypeError, ArithmeticError):
            return MISSING

    return read


class CompiledRuleset:
    """The engine-independent part: predicates in firing order, values, default and traces."""

    def __init__(self, ruleset: Ruleset, normal: list[Norm], sha256: str) -> None:
        self.ruleset = ruleset
        self.sha256 = sha256
        self.name = ruleset.name
        self.hit_policy = ruleset.hit_policy
        self.default = ruleset.default
        self.rules: list[CompiledRule] = []
        for rule in firing_order(ruleset.rules):
            norm = normal[rule.index]
            literal = {k: v for k, v in rule.then.items() if k not in rule.computed}
            self.rules.append(
                CompiledRule(
                    id=rule.id,
                    priority=rule.priority,
                    index=rule.index,
                    norm=norm,
                    predicate=make_predicate(norm),
                    fields=tuple((p, make_getter(p)) for p in fields_of(rule.when)),
                    literal_then=literal,
                    computed_then=tuple((k, make_value(e)) for k, e in rule.computed.items()),
                    then_order=tuple(rule.then),
                    tests=tuple(
                        (t, make_test(t), make_getter(t.field), _safe_value(make_value(t.rhs)))
                        for t in tests_of(norm)
                    ),
                )
            )
        self.by_index = {r.index: r for r in self.rules}
        self.position = {r.index: i for i, r in enumerate(self.rules)}

    def result_of(
        self, matched: list[CompiledRule], facts: Facts
    ) -> tuple[dict[str, Any], bool, list[dict[str, Any]]]:
        """The merged result, whether the default was used, and what each matched rule set."""
        if not matched:
            if self.default is None:
                return {}, False, []
            default = {
                k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
                for k, v in self.default.items()
            }
            return default, True, []
        sets = [rule.values(facts) for rule in matched]
        if len(sets) == 1:
            return dict(sets[0]), False, sets
        result: dict[str, Any] = {}
        for values in sets:
            for key, value in values.items():
                result.setdefault(key, value)
        return result, False, sets

    def trace(
        self,
        level: str,
        matched: list[CompiledRule],
        sets: list[dict[str, Any]],
        facts: Facts,
        used_default: bool,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "hit_policy": self.hit_policy,
            "matched": [
                {"rule": r.id, "priority": r.priority, "fields": r.field_values(facts), "set": values}
                for r, values in zip(matched, sets, strict=True)
            ],
            "used_default": used_default,
        }
        if level == "full":
            fired = {r.index for r in matched}
            out["rules"] = [
                {
                    "rule": r.id,
                    "priority": r.priority,
                    "matched": r.predicate(facts),
                    "fired": r.index in fired,
                    "conditions": r.condition_table(facts),
                }
                for r in self.rules
            ]
            if used_default:
                out["default"] = self.default
        return out


@dataclass(slots=True)
class Evaluation:
    """One evaluation: the merged result, the rules that matched in firing order, and the record."""

    result: dict[str, Any]
    matched: list[str]
    used_default: bool
    trace: dict[str, Any] | None
    engine: str
    elapsed_us: float
    ruleset: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "matched": self.matched,
            "used_default": self.used_default,
            "trace": self.trace,
            "engine": self.engine,
            "elapsed_us": self.elapsed_us,
            "ruleset": self.ruleset,
        }


class Evaluator:
    """Evaluates one ruleset version with one engine; subclasses say which rules match."""

    engine = "abstract"

    def __init__(self, compiled: CompiledRuleset, version: int = 0) -> None:
        self.compiled = compiled
        self.version = version
        self.record = {"name": compiled.name, "version": version, "sha256": compiled.sha256}

    def with_version(self, version: int) -> Evaluator:
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.version = version
        other.record = {"name": self.compiled.name, "version": version, "sha256": self.compiled.sha256}
        return other

    def match(self, facts: Facts) -> list[CompiledRule]:
        raise NotImplementedError

    def evaluate(self, facts: Facts, trace: TraceLevel = "rules") -> Evaluation:
        start = perf_counter_ns()
        matched = self.match(facts)
        compiled = self.compiled
        result, used_default, sets = compiled.result_of(matched, facts)
        trace_out = None if trace == "none" else compiled.trace(trace, matched, sets, facts, used_default)
        elapsed = (perf_counter_ns() - start) / 1000.0
        return Evaluation(
            result=result,
            matched=[r.id for r in matched],
            used_default=used_default,
            trace=trace_out,
            engine=self.engine,
            elapsed_us=elapsed,
            ruleset=dict(self.record),
        )
