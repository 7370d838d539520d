"""Static checks of a parsed ruleset and the normal form both engines compile from.

Checks: declared facts against the kind's catalogue, every field read is declared, operand types agree,
`then` keys and value types against the kind's result fields, unique rule ids; warnings for unreachable
rules and duplicate conditions.

Normal form: `not` pushed down to the comparisons by De Morgan (with the operator negated), `in` lists
expanded to `or` of `==` (and `not in` to `and` of `!=`), each comparison turned round so that a plain
field stands on its left (`3 < x` -> `x > 3`, `a + b < c` -> `a < c - b`), constants folded. A
comparison whose fields are missing from the facts is false, and stays false under negation, so the
normal form means the same thing in both engines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.rules.language.document import Origin, Rule, Ruleset
from service.rules.language.kinds import (
    FACT_CATALOG,
    FACT_TYPES,
    RESULT_CHOICES,
    RESULT_FIELDS,
    RESULT_MINIMUM,
)
from service.rules.language.problems import Problem
from service.rules.language.syntax import (
    And,
    Arith,
    Call,
    Compare,
    Cond,
    Const,
    Expr,
    Field,
    InList,
    ListLiteral,
    Literal,
    Node,
    Not,
    Or,
    fields_of,
    format_literal,
    unparse,
)

NEGATED = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}
FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
NUMERIC = ("int", "float")


@dataclass(frozen=True, slots=True)
class Test:
    """One normalised comparison: `field op rhs`; false whenever a field it reads is missing."""

    op: str
    field: str
    rhs: Expr
    text: str


@dataclass(frozen=True, slots=True)
class AllOf:
    items: tuple[Norm, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple[Norm, ...]


@dataclass(frozen=True, slots=True)
class Truth:
    value: bool


Norm = Test | AllOf | AnyOf | Truth


class NormalFormError(ValueError):
    def __init__(self, message: str, node: Node) -> None:
        super().__init__(message)
        self.node = node


def norm_text(n: Norm) -> str:
    if isinstance(n, Test):
        return n.text
    if isinstance(n, Truth):
        return "true" if n.value else "false"
    word = " and " if isinstance(n, AllOf) else " or "
    parts = [norm_text(i) if isinstance(i, Test | Truth) else f"({norm_text(i)})" for i in n.items]
    return word.join(parts)


def tests_of(n: Norm) -> list[Test]:
    if isinstance(n, Test):
        return [n]
    if isinstance(n, Truth):
        return []
    out: list[Test] = []
    for i in n.items:
        out.extend(tests_of(i))
    return out


def guarded_fields(test: Test) -> list[str]:
    """Fields a comparison must find present and non-null in durable_rules: all of them when the
    right-hand side reads a field (it would read a missing one as a value and equate two nulls);
    none for a plain `field op constant`."""
    rhs = fields_of(test.rhs)
    return list(dict.fromkeys([test.field, *rhs])) if rhs else []


def normalize(cond: Cond, negate: bool = False) -> Norm:
    if isinstance(cond, Const):
        return Truth(cond.value != negate)
    if isinstance(cond, Not):
        return normalize(cond.item, not negate)
    if isinstance(cond, And | Or):
        conj = isinstance(cond, And) != negate
        items = [normalize(c, negate) for c in cond.items]
        return _combine(conj, items)
    if isinstance(cond, InList):
        negated = cond.negated != negate
        seen: dict[str, Literal] = {}
        for item in cond.items.items:
            seen.setdefault(format_literal(item.value) + type(item.value).__name__, item)
        op = "!=" if negated else "=="
        tests: list[Norm] = [_test(op, cond.left, item, cond) for item in seen.values()]
        return _combine(negated, tests)
    op = NEGATED[cond.op] if negate else cond.op
    return _test(op, cond.left, cond.right, cond)


def _combine(conj: bool, items: list[Norm]) -> Norm:
    flat: list[Norm] = []
    for item in items:
        if isinstance(item, Truth):
            if item.value != conj:  # false in an and, true in an or
                return Truth(not conj)
            continue
        if (conj and isinstance(item, AllOf)) or (not conj and isinstance(item, AnyOf)):
            flat.extend(item.items)
        else:
            flat.append(item)
    if not flat:
        return Truth(conj)
    if len(flat) == 1:
        return flat[0]
    return AllOf(tuple(flat)) if conj else AnyOf(tuple(flat))


def _arith(op: str, left: Expr, right: Expr) -> Expr:
    return Arith(op, left, right)


def _test(op: str, left: Expr, right: Expr, origin: Node) -> Test:
    if not isinstance(left, Field) and isinstance(right, Field):
        left, right, op = right, left, FLIPPED[op]
    for _ in range(8):
        if isinstance(left, Field):
            right = fold(right)
            return Test(op, left.path, right, f"{left.path} {op} {unparse(right)}")
        moved = _isolate(op, left, right)
        if moved is None:
            swapped = _isolate(FLIPPED[op], right, left) if not isinstance(right, Literal) else None
            if swapped is None:
                break
            moved = swapped
        op, left, right = moved
    if isinstance(left, Literal) and isinstance(right, Literal):
        raise NormalFormError("the comparison has no field: it compares two constants", origin)
    raise NormalFormError(
        "put a field alone on one side of the comparison (only + and - terms and scaling by a number can be moved across)",
        origin,
    )


def _isolate(op: str, left: Expr, right: Expr) -> tuple[str, Expr, Expr] | None:
    """Move one + or - term of `left` to the right-hand side, keeping a field-bearing part on the left."""
    if not isinstance(left, Arith):
        return None
    if left.op in "*/":
        # scale by a non-zero number: x * k < r  <=>  x < r / k (the comparison turns round when k < 0)
        a, b = left.left, left.right
        if left.op == "*" and _number(a) is not None and _has_field(b):
            a, b = b, a
        k = _number(b)
        if k is None or k == 0 or not _has_field(a):
            return None
        new_op = op if k > 0 else FLIPPED[op]
        return new_op, a, _arith("/" if left.op == "*" else "*", right, b)
    a, b = left.left, left.right
    if left.op == "+":
        if _has_field(a):
            return op, a, _arith("-", right, b)
        return op, b, _arith("-", right, a)
    if _has_field(a):
        return op, a, _arith("+", right, b)
    # a - b op r  <=>  b flip(op) a - r
    return FLIPPED[op], b, _arith("-", a, right)


def fold(e: Expr) -> Expr:
    """Arithmetic on numbers only, computed now (durable_rules never matches `$add` of two constants)."""
    if not isinstance(e, Arith):
        return e
    left, right = fold(e.left), fold(e.right)
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        try:
            value = {"+": a + b, "-": a - b, "*": a * b}[e.op] if e.op != "/" else a / b
        except (ArithmeticError, KeyError):
            return Arith(e.op, left, right, e.offset)
        return Literal(value, e.offset)
    return Arith(e.op, left, right, e.offset)


def _number(e: Expr) -> int | float | None:
    if isinstance(e, Literal) and isinstance(e.value, int | float) and not isinstance(e.value, bool):
        return e.value
    return None


def _has_field(e: Expr) -> bool:
    if isinstance(e, Field):
        return True
    if isinstance(e, Arith):
        return _has_field(e.left) or _has_field(e.right)
    if isinstance(e, Call):
        return any(_has_field(a) for a in e.args)
    return False


@dataclass(slots=True)
class Analysis:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    normal: list[Norm] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def firing_order(rules: list[Rule]) -> list[Rule]:
    """Highest priority first; ties keep declaration order."""
    return sorted(rules, key=lambda r: (-r.priority, r.index))


class _Checker:
    def __init__(self, ruleset: Ruleset) -> None:
        self.rs = ruleset
        self.out = Analysis()
        self.catalog = FACT_CATALOG.get(ruleset.kind, {})
        self.results = RESULT_FIELDS.get(ruleset.kind, {})

    def problem(
        self,
        path: str,
        message: str,
        rule: Rule | None = None,
        at: tuple[int, int] | None = None,
        warning: bool = False,
    ) -> None:
        line, column = at or self.rs.position(path)
        p = Problem(self.rs.source, line, column, rule.id if rule else None, path, message)
        (self.out.warnings if warning else self.out.errors).append(p)

    def run(self) -> Analysis:
        rs = self.rs
        for path, type_name in rs.facts.items():
            where = f"facts.{path}"
            if type_name not in FACT_TYPES:
                self.problem(
                    where, f"unknown type '{type_name}': expected one of {', '.join(sorted(FACT_TYPES))}"
                )
            elif path not in self.catalog:
                self.problem(
                    where, f"the {rs.kind} decision does not supply '{path}'", at=rs.position(where, False)
                )
            elif self.catalog[path] != type_name:
                self.problem(where, f"'{path}' is supplied as {self.catalog[path]}, not {type_name}")
        seen: dict[str, int] = {}
        for rule in rs.rules:
            base = f"rules[{rule.index}]"
            if rule.id in seen:
                self.problem(
                    f"{base}.id",
                    f"duplicate rule id '{rule.id}' (first used by rules[{seen[rule.id]}])",
                    rule,
                )
            else:
                seen[rule.id] = rule.index
            self.check_condition(rule, base)
            self.check_values(rule.then, rule.computed, f"{base}.then", rule)
        if rs.default is not None:
            self.check_values(rs.default, {}, "default", None)
        for i, test in enumerate(rs.tests):
            for key in test.expect:
                if key not in ("rules", "used_default") and key not in self.results:
                    self.problem(
                        f"tests[{i}].expect.{key}", f"'{key}' is not a result of the {rs.kind} decision"
                    )
            for rid in test.expect.get("rules", []) or []:
                if rid not in seen:
                    self.problem(f"tests[{i}].expect.rules", f"no rule has the id '{rid}'")
        if not self.out.errors:
            self.reachability()
        return self.out

    def node_position(self, node: Node, origin: Origin | None, rule: Rule, base: str) -> tuple[int, int]:
        if origin is None:
            return self.rs.position(f"{base}.when")
        _, line, column, single = origin
        return (line, column + node.offset) if single else (line, column)

    def check_condition(self, rule: Rule, base: str) -> None:
        def walk(node: Node, origin: Origin | None) -> None:
            origin = self.rs.origins.get(id(node), origin)
            where = origin[0] if origin else f"{base}.when"
            if isinstance(node, And | Or):
                for c in node.items:
                    walk(c, origin)
            elif isinstance(node, Not):
                walk(node.item, origin)
            elif isinstance(node, Compare):
                lt = self.expr_type(node.left, rule, where, origin, base)
                rt = self.expr_type(node.right, rule, where, origin, base)
                self.check_division(node, rule, where, origin, base)
                if lt and rt and not _comparable(lt, rt, node.op):
                    self.problem(
                        where,
                        f"cannot compare {lt} with {rt} using {node.op} in '{unparse(node)}'",
                        rule,
                        self.node_position(node, origin, rule, base),
                    )
            elif isinstance(node, InList):
                lt = self.expr_type(node.left, rule, where, origin, base)
                self.check_division(node, rule, where, origin, base)
                for item in node.items.items:
                    it = _literal_type(item.value)
                    if lt and not _comparable(lt, it, "=="):
                        self.problem(
                            where,
                            f"the list holds {it} {format_literal(item.value)} but "
                            f"'{unparse(node.left)}' is {lt}",
                            rule,
                            self.node_position(item, origin, rule, base),
                        )

        walk(rule.when, None)
        if self.out.errors and any(p.rule_id == rule.id for p in self.out.errors):
            self.out.normal.append(Truth(False))
            return
        try:
            self.out.normal.append(normalize(rule.when))
        except NormalFormError as exc:
            origin = self._origin_of(rule.when, exc.node)
            where = origin[0] if origin else f"{base}.when"
            self.problem(
                where,
                f"{exc} in '{unparse(exc.node)}'",
                rule,
                self.node_position(exc.node, origin, rule, base),
            )
            self.out.normal.append(Truth(False))

    def _origin_of(self, root: Node, target: Node) -> Origin | None:
        def find(node: Node, origin: Origin | None) -> Origin | bool | None:
            origin = self.rs.origins.get(id(node), origin)
            if node is target:
                return origin if origin else True
            children: tuple[Node, ...] = ()
            if isinstance(node, And | Or):
                children = node.items
            elif isinstance(node, Not):
                children = (node.item,)
            for c in children:
                got = find(c, origin)
                if got is not None:
                    return got
            return None

        got = find(root, None)
        return got if isinstance(got, tuple) else None

    def check_division(
        self, node: Compare | InList, rule: Rule, where: str, origin: Origin | None, base: str
    ) -> None:
        def walk(e: Node) -> None:
            if isinstance(e, Arith):
                if e.op == "/" and not (
                    isinstance(e.right, Literal)
                    and isinstance(e.right.value, int | float)
                    and not isinstance(e.right.value, bool)
                    and e.right.value != 0
                ):
                    self.problem(
                        where,
                        "in a condition, divide only by a non-zero number, not by a field or "
                        f"expression: '{unparse(e)}'",
                        rule,
                        self.node_position(e, origin, rule, base),
                    )
                walk(e.left)
                walk(e.right)
            elif isinstance(e, Compare):
                walk(e.left)
                walk(e.right)
            elif isinstance(e, InList):
                walk(e.left)
            elif isinstance(e, Call):
                self.problem(
                    where,
                    f"{e.name}() may be used in '= expression' values, not in conditions",
                    rule,
                    self.node_position(e, origin, rule, base),
                )

        walk(node)

    def expr_type(
        self, e: Expr, rule: Rule | None, where: str, origin: Origin | None, base: str
    ) -> str | None:
        """Type name of an expression, or None after reporting why it has none."""
        at = self.node_position(e, origin, rule, base) if rule is not None and origin is not None else None
        if isinstance(e, Literal):
            return _literal_type(e.value)
        if isinstance(e, Field):
            declared = self.rs.facts.get(e.path)
            if declared is None:
                supplied = self.catalog.get(e.path)
                hint = (
                    f" (add '{e.path}: {supplied}' to facts)"
                    if supplied
                    else f" and the {self.rs.kind} decision does not supply it"
                )
                self.problem(where, f"'{e.path}' is not declared in facts{hint}", rule, at)
                return None
            if declared not in FACT_TYPES or self.catalog.get(e.path) != declared:
                return None  # already reported on the facts entry
            if declared == "list[str]":
                self.problem(where, f"'{e.path}' is a list and cannot be used in an expression", rule, at)
                return None
            return declared
        if isinstance(e, ListLiteral):
            self.problem(where, "a list may only follow 'in'", rule, at)
            return None
        if isinstance(e, Arith):
            lt = self.expr_type(e.left, rule, where, origin, base)
            rt = self.expr_type(e.right, rule, where, origin, base)
            if lt is None or rt is None:
                return None
            if lt not in NUMERIC or rt not in NUMERIC:
                self.problem(
                    where, f"'{e.op}' needs numbers, found {lt} and {rt} in '{unparse(e)}'", rule, at
                )
                return None
            return "int" if lt == rt == "int" and e.op != "/" else "float"
        args = [self.expr_type(a, rule, where, origin, base) for a in e.args]
        if any(a is None for a in args):
            return None
        if any(a not in NUMERIC for a in args):
            self.problem(where, f"{e.name}() needs numbers in '{unparse(e)}'", rule, at)
            return None
        if e.name in ("ceil", "floor") or (e.name == "round" and len(args) == 1):
            return "int"
        if e.name == "round":
            if args[1] != "int":
                self.problem(where, "round()'s second argument is a whole number of digits", rule, at)
            return "float"
        return "int" if all(a == "int" for a in args) else "float"

    def check_values(
        self, values: dict[str, Any], computed: dict[str, Expr], base: str, rule: Rule | None
    ) -> None:
        for key, value in values.items():
            where = f"{base}.{key}"
            expected = self.results.get(key)
            if expected is None:
                allowed = ", ".join(self.results)
                self.problem(
                    where,
                    f"'{key}' is not a result of the {self.rs.kind} decision; expected one of {allowed}",
                    rule,
                    self.rs.position(where, False),
                )
                continue
            if key in computed:
                got = self.expr_type(computed[key], rule, where, None, base)
                if got is None:
                    continue
                if expected == "int" and got != "int":
                    self.problem(
                        where,
                        f"'{key}' is int but the expression gives {got}: wrap it in ceil(), "
                        "floor() or round()",
                        rule,
                    )
                elif expected not in NUMERIC and got != expected:
                    self.problem(where, f"'{key}' is {expected} but the expression gives {got}", rule)
                continue
            if not _value_fits(expected, value):
                self.problem(where, f"'{key}' is {expected}, found {value!r}", rule)
            elif key in RESULT_CHOICES and value not in RESULT_CHOICES[key]:
                self.problem(
                    where, f"'{key}' must be one of {', '.join(RESULT_CHOICES[key])}, found {value!r}", rule
                )
            elif key in RESULT_MINIMUM and value < RESULT_MINIMUM[key]:
                self.problem(where, f"'{key}' must be at least {RESULT_MINIMUM[key]}, found {value!r}", rule)

    def reachability(self) -> None:
        ordered = firing_order(self.rs.rules)
        normal = self.out.normal
        seen: dict[str, Rule] = {}
        always: Rule | None = None
        for rule in ordered:
            text = norm_text(normal[rule.index])
            where = f"rules[{rule.index}].when"
            if text == "false":
                self.problem(where, "the condition can never be true", rule, warning=True)
            if self.rs.hit_policy == "first" and always is not None:
                self.problem(
                    where,
                    f"unreachable: rule '{always.id}' fires first and its condition is always true",
                    rule,
                    warning=True,
                )
            elif text in seen:
                first = seen[text]
                if self.rs.hit_policy == "first":
                    self.problem(
                        where,
                        f"unreachable: rule '{first.id}' has the same condition and fires first",
                        rule,
                        warning=True,
                    )
                else:
                    self.problem(where, f"duplicate condition: same as rule '{first.id}'", rule, warning=True)
            seen.setdefault(text, rule)
            if text == "true" and always is None:
                always = rule


def _literal_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def _comparable(a: str, b: str, op: str) -> bool:
    if a == "null" or b == "null":
        return op in ("==", "!=") and not (a == "null" and b == "null")
    if a in NUMERIC and b in NUMERIC:
        return True
    if a == b == "str":
        return True
    return a == b == "bool" and op in ("==", "!=")


def _value_fits(expected: str, value: Any) -> bool:
    if expected == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected == "str":
        return isinstance(value, str)
    if expected == "bool":
        return isinstance(value, bool)
    if expected == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if expected == "dict[str,int]":
        return isinstance(value, dict) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value.values()
        )
    return False


def analyse(ruleset: Ruleset) -> Analysis:
    """Type and catalogue checks, warnings, and the normal form of every rule's condition."""
    return _Checker(ruleset).run()
