"""What both engines share: the rules compiled to Python closures, `then` values, traces, the result record.

An engine only decides which rules matched; computing the result, the default and the trace is done
here, the same way for both, so the engines cannot drift apart on anything but matching.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any, TypeVar
from typing import Literal as TypingLiteral

from service.rules.language.analysis import AllOf, Norm, Test, Truth, firing_order, tests_of
from service.rules.language.document import Ruleset
from service.rules.language.problems import RuleEvaluationError
from service.rules.language.syntax import (
    MAX_INTEGER,
    ROUND_DIGITS,
    Arith,
    Call,
    Expr,
    Field,
    ListLiteral,
    Literal,
    fields_of,
)

TraceLevel = TypingLiteral["none", "rules", "full"]
TRACE_LEVELS = frozenset({"none", "rules", "full"})
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


class OutOfBounds(ArithmeticError):
    """A value an expression reads or computes lies outside the expression limits (see docs/rulesets.md)."""


def _bounded(value: Any) -> int | float:
    """`value` when it is a number within the limits; an error otherwise, so that no operation's cost can
    grow with the size of a number the facts supply or an earlier operation made."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, found {type(value).__name__}")
    if isinstance(value, int) and not -MAX_INTEGER <= value <= MAX_INTEGER:
        raise OutOfBounds(
            f"a whole number of {value.bit_length()} bits is out of range; at most {MAX_INTEGER} "
            "(2**53 - 1) either way"
        )
    return value


def _round(x: Any, digits: Any = None) -> Any:
    if digits is None:
        return round(x)
    if isinstance(digits, float):
        raise TypeError("round()'s digits must be a whole number")
    if not -ROUND_DIGITS <= digits <= ROUND_DIGITS:
        raise OutOfBounds(f"round() takes digits from -{ROUND_DIGITS} to {ROUND_DIGITS}, got {digits}")
    return round(x, digits)


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
            return _bounded(fn(_bounded(lv), _bounded(rv)))

        return arith
    if isinstance(expr, Call):
        func = FUNCTIONS[expr.name]
        args = [make_value(a) for a in expr.args]

        def call(facts: Facts) -> Any:
            values = [a(facts) for a in args]
            if any(v is MISSING for v in values):
                return MISSING
            return _bounded(func(*[_bounded(v) for v in values]))

        return call
    if isinstance(expr, ListLiteral):
        items = [i.value for i in expr.items]
        return lambda facts: list(items)
    raise TypeError(f"not an expression: {expr!r}")


def make_test(test: Test) -> Predicate:
    """A comparison as a closure. Like durable_rules: a missing field never matches, and a field whose
    value is null matches `== null` and nothing else (not even `!= 3`)."""
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
                if value is None:
                    return constant is None and equal
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
        is_equality = test.op == "=="

        def test_constant(facts: Facts) -> bool:
            value = get(facts)
            if value is MISSING:
                return False
            if value is None:
                return literal is None and is_equality
            try:
                return bool(compare(value, literal))
            except TypeError:
                return False

        return test_constant
    rhs = make_value(test.rhs)

    def test_expr(facts: Facts) -> bool:
        value = get(facts)
        if value is MISSING or value is None:
            return False
        try:
            other = rhs(facts)
            if other is MISSING or other is None:
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
    # only scalar literals: the values are a plain copy of `literal_then`
    flat: bool = False
    # the fields read, split for speed: `root.leaf` paths as (path, root, leaf), and the rest with getters
    pairs: tuple[tuple[str, str, str], ...] = ()
    other_fields: tuple[tuple[str, Getter], ...] = ()

    def __post_init__(self) -> None:
        paths = [path for path, _ in self.fields]
        self.pairs = tuple((p, *p.split(".")) for p in paths if p.count(".") == 1)  # type: ignore[misc]
        self.other_fields = tuple((p, g) for p, g in self.fields if p.count(".") != 1)

    def values(self, facts: Facts) -> dict[str, Any]:
        if self.flat:
            return dict(self.literal_then)
        out: dict[str, Any] = {}
        for key in self.then_order:
            if key in self.literal_then:
                v = self.literal_then[key]
                out[key] = list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v
        for key, fn in self.computed_then:
            try:
                v = fn(facts)
            except (TypeError, ArithmeticError, ValueError) as exc:
                raise RuleEvaluationError(
                    f"rule '{self.id}': cannot compute '{key}': {exc}",
                    self.id,
                    f"rules[{self.index}].then.{key}",
                ) from None
            if v is MISSING:
                raise RuleEvaluationError(
                    f"rule '{self.id}': cannot compute '{key}': a field it reads is missing",
                    self.id,
                    f"rules[{self.index}].then.{key}",
                )
            out[key] = v
        return out

    def field_values(self, facts: Facts) -> dict[str, Any]:
        """The values of the fields the condition reads (None when missing), for the `rules` trace."""
        out: dict[str, Any] = {}
        for path, a, b in self.pairs:
            try:
                out[path] = facts[a][b]
            except (KeyError, TypeError, IndexError):
                out[path] = None
        for path, get in self.other_fields:
            out[path] = _plain(get(facts))
        return out

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
                    flat=not rule.computed
                    and not any(isinstance(v, list | dict) for v in rule.then.values()),
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


_T = TypeVar("_T")


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
    # what callers work out from `result` (a decision's policy), by the function that made it: a reused
    # evaluation shares the one of the evaluation it repeats (service.rules.reuse), so a policy is worked
    # out once per kept result, not once per request
    derived: dict[Callable[[dict[str, Any]], Any], Any] = field(
        default_factory=dict, repr=False, compare=False
    )

    def derive(self, make: Callable[[dict[str, Any]], _T]) -> _T:
        """`make(self.result)`, kept with this evaluation's result (the result is never changed)."""
        found: _T | None = self.derived.get(make)
        if found is None:
            found = self.derived[make] = make(self.result)
        return found

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
        """Decide on `facts`; `trace` is none, rules or full (ValueError for anything else)."""
        if trace not in TRACE_LEVELS:
            raise ValueError(f"unknown trace level {trace!r}: expected none, rules or full")
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
