"""The durable_rules engine: the normal form compiled to durable_rules JSON, driven through its C module.

How it is driven (see the project's notes on durable_rules): no `Host` and no timer threads; the C
module `durable_rules_engine` is called directly. Each compiled ruleset is loaded into the engine as its own
`LoadedRuleset`, owned by the evaluators of that compiled ruleset and deleted from the engine, with its
sessions, once none of them is left. Each thread uses one fixed session id per loaded ruleset, never creating
or deleting sessions per request. Every rule is ANDed with a type tag so that no rule can match the session's
hidden state fact. First hit asserts an event (consumed by the first match); collect asserts a fact and
retracts it in `finally`. The action loop is always drained. The engine only says which rules matched; the
values are computed in Python afterwards.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import weakref
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import durable_rules_engine as dre
import msgspec

from service.rules.language.analysis import AllOf, AnyOf, Norm, Test, Truth, guarded_fields
from service.rules.language.evaluation import (
    CompiledRule,
    CompiledRuleset,
    Evaluation,
    Evaluator,
    Facts,
    TraceLevel,
)
from service.rules.language.problems import RuleEvaluationError
from service.rules.language.python_engine import PythonEvaluator
from service.rules.language.syntax import Arith, Call, Expr, Field, ListLiteral, Literal

TAG_FIELD = "t"
TAG_VALUE = "req"
PRIORITY_BASE = 65534
# top-level fact names durable_rules reserves; renamed on the way in (our field names never start with _)
RESERVED_ROOTS = {"id": "_id", "sid": "_sid", "t": "_t"}
OPERATORS = {"!=": "$neq", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
ARITH = {"+": "$add", "-": "$sub", "*": "$mul", "/": "$div"}

# JSON writers emit 1e-07; durable_rules' parser rejects exponents
_EXPONENT = re.compile(r"\d[eE][-+]?\d")


class EngineError(RuntimeError):
    """durable_rules refused a ruleset or an evaluation (for example error 303: too many co-true conditions)."""


def format_float(x: float) -> str:
    """A float as plain decimal text with a point, the only form durable_rules parses."""
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError(f"{x} cannot be given to durable_rules")
    text = repr(x)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    if "." not in text:
        text += ".0"
    return text


def plain_json(value: Any) -> str:
    """JSON text with every float written without an exponent."""
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{json.dumps(str(k), ensure_ascii=False)}:{plain_json(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ",".join(plain_json(v) for v in value) + "]"
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _durable_path(path: str) -> str:
    root, dot, rest = path.partition(".")
    return RESERVED_ROOTS.get(root, root) + dot + rest


def _operand(expr: Expr, divisor: bool = False) -> Any:
    if isinstance(expr, Literal):
        value = expr.value
        if divisor and isinstance(value, int) and not isinstance(value, bool):
            # a float divisor makes durable_rules divide like Python (int / int truncates there)
            return float(value)
        return value
    if isinstance(expr, Field):
        return {"$m": _durable_path(expr.path)}
    if isinstance(expr, Arith):
        return {ARITH[expr.op]: {"$l": _operand(expr.left), "$r": _operand(expr.right, expr.op == "/")}}
    if isinstance(expr, Call | ListLiteral):
        raise EngineError(f"{type(expr).__name__} cannot be compiled to durable_rules")
    raise EngineError(f"not an expression: {expr!r}")


def condition_json(norm: Norm) -> dict[str, Any] | None:
    """durable_rules condition for a normal-form tree; None for a constant (true is the bare tag)."""
    if isinstance(norm, Truth):
        return None
    if isinstance(norm, Test):
        path = _durable_path(norm.field)
        rhs = _operand(norm.rhs)
        test = {path: rhs} if norm.op == "==" else {OPERATORS[norm.op]: {path: rhs}}
        guarded = guarded_fields(norm)
        if not guarded:
            return test
        # durable_rules reads a missing field on the right-hand side as a value, and equates two nulls:
        # require every field of a field-to-field comparison to be present and not null
        return {"$and": [*({"$neq": {_durable_path(p): None}} for p in guarded), test]}
    key = "$and" if isinstance(norm, AllOf) else "$or"
    assert isinstance(norm, AllOf | AnyOf)
    items = [condition_json(i) for i in norm.items]
    return {key: [i for i in items if i is not None]}


def rule_name(index: int) -> str:
    return f"r{index}"


def ruleset_definition(compiled: CompiledRuleset) -> dict[str, Any]:
    """The durable_rules ruleset: one rule per rule that can match, in declaration order."""
    definition: dict[str, Any] = {}
    for rule in sorted(compiled.rules, key=lambda r: r.index):
        if isinstance(rule.norm, Truth) and not rule.norm.value:
            continue  # can never match
        cond = condition_json(rule.norm)
        tag = {TAG_FIELD: TAG_VALUE}
        body = {"$and": [tag, cond]} if cond is not None else tag
        definition[rule_name(rule.index)] = {
            "pri": PRIORITY_BASE - rule.priority,
            "all": [{"m": body}],
        }
    return definition


def durable_name(name: str, sha256: str) -> str:
    return f"{name}-{sha256[:16]}"


_ABSENT: Any = object()
_encode = msgspec.json.Encoder().encode
# a rule every loaded ruleset gets besides its own: matched by the one event that opens a session, so that an
# action has run on every session before it is deleted (deleting one on which none ran can crash the core)
OPEN_RULE = "open"
OPEN_TAG = "open"


def _release(handle: int, sessions: list[str]) -> None:
    """Delete a ruleset and its sessions from the engine (deleting the ruleset alone leaves each session's
    memory behind)."""
    for sid in sessions:
        with contextlib.suppress(dre.error):
            dre.delete_state(handle, sid)
    dre.delete_ruleset(handle)


class LoadedRuleset:
    """One ruleset loaded into durable_rules, with a session per thread that evaluates on it.

    The evaluators of one compiled ruleset share it (`Evaluator.with_version` copies the reference); once
    none refers to it, no thread can be evaluating on it and its finalizer deletes it and its sessions from
    the engine. A thread keeps one session id for its life; the id of a thread that has ended is given to
    the next new thread (its session is empty: every evaluation drains and retracts what it asserted).
    """

    __slots__ = ("__weakref__", "_local", "_lock", "_owners", "_sessions", "handle", "name")

    def __init__(self, name: str, definition: dict[str, Any]) -> None:
        self.name = name
        opened = {**definition, OPEN_RULE: {"pri": 0, "all": [{"m": {TAG_FIELD: OPEN_TAG}}]}}
        try:
            self.handle: int = dre.create_ruleset(name, plain_json(opened))
        except dre.error as exc:
            raise EngineError(f"durable_rules refused ruleset {name}: {exc}") from None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._sessions: list[str] = []
        self._owners: dict[str, weakref.ref[threading.Thread]] = {}
        finalizer = weakref.finalize(self, _release, self.handle, self._sessions)
        finalizer.atexit = False  # the process's memory goes with it

    def session(self) -> str:
        """This thread's session id on this ruleset."""
        sid: str | None = getattr(self._local, "sid", None)
        if sid is None:
            sid = self._open()
        return sid

    def _open(self) -> str:
        thread = threading.current_thread()
        with self._lock:
            sid = next((s for s, owner in self._owners.items() if _ended(owner())), None)
            if sid is None:
                sid = f"w{len(self._sessions) + 1}"
                self._sessions.append(sid)
                code, state = dre.assert_event(
                    self.handle, plain_json({"sid": sid, "id": OPEN_TAG, TAG_FIELD: OPEN_TAG})
                )
                if code != 0 or not _drain_all(self.handle, state):
                    raise EngineError(
                        f"durable_rules did not open a session on ruleset {self.name} (code {code})"
                    )
            self._owners[sid] = weakref.ref(thread)
        self._local.sid = sid
        return sid

    def open_sessions(self) -> int:
        """How many sessions the engine holds for this ruleset."""
        return len(self._sessions)


def _ended(thread: threading.Thread | None) -> bool:
    return thread is None or not thread.is_alive()


def _drain_all(handle: int, state: int) -> int:
    """Run the action loop to its end; how many actions ran."""
    ran = 0
    action = dre.start_action_for_state(handle, state)
    message: str | None = action[1] if action else None
    while message:
        ran += 1
        message = dre.complete_and_start_action(handle, state)
    return ran


def _drain(handle: Any, state: int) -> list[int]:
    """Run the action loop to its end, returning the rule indexes in firing order."""
    fired: list[int] = []
    action = dre.start_action_for_state(handle, state)
    message: str | None = action[1] if action else None
    while message:
        # messages look like {"r12":{"m":{...}}}; the rule name is all we need
        fired.append(int(message[3 : message.index('"', 3)]))
        message = dre.complete_and_start_action(handle, state)
    return fired


class DurableEvaluator(Evaluator):
    """Matching by durable_rules; falls back to the Python predicates (and says so) if it refuses."""

    engine = "durable"

    def __init__(self, compiled: CompiledRuleset, version: int = 0, *, fallback: bool = True) -> None:
        super().__init__(compiled, version)
        definition = ruleset_definition(compiled)
        self.definition_json = plain_json(definition)
        self.name = durable_name(compiled.name, compiled.sha256)
        # this evaluator's own ruleset in the engine (shared with its versions), gone when they all are
        self.loaded = LoadedRuleset(self.name, definition) if definition else None
        self.fallback = fallback
        self.python = PythonEvaluator(compiled, version)
        # only the fields the conditions read are sent: a smaller message is faster to write and to parse
        leaves: dict[str, set[str] | None] = {}
        for rule in compiled.rules:
            for test in _tests(rule.norm):
                for path in [test.field, *_expr_fields(test.rhs)]:
                    root, _, rest = path.partition(".")
                    leaf = rest.partition(".")[0]
                    if not leaf:
                        leaves[root] = None
                    elif root not in leaves or leaves[root] is not None:
                        leaves.setdefault(root, set()).add(leaf)  # type: ignore[union-attr]
        self.layout = tuple(
            (root, RESERVED_ROOTS.get(root, root), None if names is None else tuple(sorted(names)))
            for root, names in leaves.items()
        )
        self.first = compiled.hit_policy == "first"
        self.by_index = compiled.by_index
        self.position = compiled.position

    def message(self, facts: Facts, sid: str) -> str:
        msg: dict[str, Any] = {"sid": sid, "id": "f", TAG_FIELD: TAG_VALUE}
        for root, key, names in self.layout:
            value = facts.get(root, _ABSENT)
            if value is _ABSENT:
                continue
            if names is not None and (value.__class__ is dict or isinstance(value, Mapping)):
                msg[key] = {name: value[name] for name in names if name in value}
            else:
                msg[key] = value
        try:
            text = _encode(msg).decode()
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise RuleEvaluationError(f"facts are not JSON values: {exc}") from None
        if _EXPONENT.search(text):
            text = plain_json(msg)
        return text

    def match(self, facts: Facts) -> list[CompiledRule]:
        loaded = self.loaded  # held for the whole call: the ruleset cannot be deleted under it
        if loaded is None:
            return []
        handle = loaded.handle
        text = self.message(facts, loaded.session())
        try:
            if self.first:
                code, state = dre.assert_event(handle, text)
                if code != 0:
                    return []
                fired = _drain(handle, state)
                return [self.by_index[fired[0]]] if fired else []
            code, state = dre.assert_fact(handle, text)
            if code == 2:  # a fact left over from an interrupted call: remove it and try again
                dre.retract_fact(handle, text)
                code, state = dre.assert_fact(handle, text)
            if code != 0:
                if code == 1:
                    return []
                return []
            try:
                fired = _drain(handle, state)
            finally:
                dre.retract_fact(handle, text)
        except dre.error as exc:
            raise EngineError(f"durable_rules failed on ruleset {self.name}: {exc}") from None
        # an `or` fires once per true branch: keep each rule once, in firing order
        position = self.position
        return [self.by_index[i] for i in sorted(set(fired), key=position.__getitem__)]

    def evaluate(self, facts: Facts, trace: TraceLevel = "rules") -> Evaluation:
        try:
            return super().evaluate(facts, trace)
        except EngineError:
            if not self.fallback:
                raise
            evaluation = self.python.evaluate(facts, trace)
            evaluation.ruleset = dict(self.record)
            return evaluation


def _tests(norm: Norm) -> list[Test]:
    if isinstance(norm, Test):
        return [norm]
    if isinstance(norm, Truth):
        return []
    return [t for i in norm.items for t in _tests(i)]


def _expr_fields(expr: Expr) -> list[str]:
    if isinstance(expr, Field):
        return [expr.path]
    if isinstance(expr, Arith):
        return _expr_fields(expr.left) + _expr_fields(expr.right)
    return []
