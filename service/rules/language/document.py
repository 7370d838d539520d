"""The ruleset document: reading the YAML into a `Ruleset`, with every problem located by line and column.

The YAML is composed into a node tree first so that each value keeps its position; values are then
built from the nodes. Conditions and `= expression` values are parsed by `service.rules.language.syntax`.

Before anything is composed, the text is bounded: at most `MAX_DOCUMENT_BYTES`, nested at most
`MAX_DEPTH` levels, and without anchors or aliases, so that a small document cannot expand into a huge
tree ("billion laughs") or recurse the reader past Python's stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from service.rules.language.kinds import KINDS
from service.rules.language.problems import Problem, RulesetError
from service.rules.language.syntax import (
    MAX_INTEGER,
    And,
    Cond,
    Const,
    Expr,
    Not,
    Or,
    SyntaxProblem,
    parse_condition,
    parse_expression,
)

MAX_DOCUMENT_BYTES = 524_288
MAX_DEPTH = 32
HIT_POLICIES = ("first", "collect")
PRIORITY_MAX = 65534
NAME_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
RULE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
FIELD_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*$")
TOP_KEYS = ("ruleset", "kind", "description", "hit_policy", "facts", "rules", "default", "tests")
RULE_KEYS = ("id", "priority", "description", "when", "then")
TEST_KEYS = ("name", "given", "expect")

Position = tuple[int, int]
Origin = tuple[str, int, int, bool]


@dataclass(slots=True)
class Rule:
    """One rule: `when` is the condition tree; `then` keeps the values as written, `computed` the parsed
    `= expression` ones by result key."""

    id: str
    priority: int
    description: str
    when: Cond
    then: dict[str, Any]
    index: int = 0
    computed: dict[str, Expr] = field(default_factory=dict)


@dataclass(slots=True)
class RulesetTest:
    name: str
    given: dict[str, Any]
    expect: dict[str, Any]
    position: Position = (0, 0)


@dataclass(slots=True)
class Ruleset:
    name: str
    kind: str
    description: str
    hit_policy: str
    facts: dict[str, str]
    rules: list[Rule]
    default: dict[str, Any] | None
    tests: list[RulesetTest]
    text: str
    source: str = "<string>"
    document: dict[str, Any] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    origins: dict[int, Origin] = field(default_factory=dict)
    # what the compiler derived from this document (`service.rules.language.compiler`), kept with it and
    # dropped with it
    derived: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    def position(self, path: str, value: bool = True) -> Position:
        """Best known position of a document path such as `rules[1].then.outcome`."""
        if value and path + "#value" in self.positions:
            return self.positions[path + "#value"]
        probe = path
        while probe:
            if probe in self.positions:
                return self.positions[probe]
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
        return (1, 1)


_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """Safe YAML without timestamp conversion: dates stay strings, every value stays JSON-ready."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _Reader:
    """Turns the composed node tree into plain values while recording each path's position."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.positions: dict[str, Position] = {}
        self.loader: _Loader | None = None

    def value(self, node: yaml.Node, path: str) -> Any:
        self.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self.scalar(key_node)
                child = f"{path}.{key}" if path else str(key)
                self.positions[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[str(key)] = self.value(value_node, child)
                self.positions[child + "#value"] = (
                    value_node.start_mark.line + 1,
                    value_node.start_mark.column + 1,
                )
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        return self.scalar(node, path)

    def scalar(self, node: yaml.Node, path: str = "") -> Any:
        assert self.loader is not None
        if not isinstance(node, yaml.ScalarNode):
            return self.value(node, "")
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        try:
            value = self.loader.construct_object(node, deep=True)
        except ValueError as exc:  # such as a whole number with more digits than Python converts
            problem = Problem(self.source, line, column, None, path, f"unreadable value: {exc}")
            raise RulesetError([problem]) from None
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
            raise RulesetError(
                [
                    Problem(
                        self.source,
                        line,
                        column,
                        None,
                        path,
                        f"the whole number is out of range; at most {MAX_INTEGER} (2**53 - 1) either way",
                    )
                ]
            )
        return value


class _Builder:
    def __init__(self, source: str, positions: dict[str, Position], nodes: dict[str, yaml.Node]) -> None:
        self.source = source
        self.positions = positions
        self.nodes = nodes
        self.problems: list[Problem] = []
        # id(condition root) -> (document path, line, column of its first character, single line?)
        self.origins: dict[int, Origin] = {}

    def pos(self, path: str, value: bool = True) -> Position:
        if value and path + "#value" in self.positions:
            return self.positions[path + "#value"]
        probe = path
        while probe:
            if probe in self.positions:
                return self.positions[probe]
            cut = max(probe.rfind("."), probe.rfind("["))
            probe = probe[:cut] if cut > 0 else ""
        return (1, 1)

    def add(self, path: str, message: str, rule_id: str | None = None, at: Position | None = None) -> None:
        line, column = at or self.pos(path)
        self.problems.append(Problem(self.source, line, column, rule_id, path, message))

    def text_position(self, path: str, offset: int) -> Position:
        """Position of character `offset` inside the string scalar at `path`."""
        node = self.nodes.get(path)
        line, column = self.pos(path)
        if isinstance(node, yaml.ScalarNode) and "\n" not in node.value:
            quote = 1 if node.style in ("'", '"') else 0
            if node.start_mark.line == node.end_mark.line:
                return (line, column + quote + offset)
        return (line, column)

    def condition(self, raw: Any, path: str, rule_id: str | None) -> Cond | None:
        if isinstance(raw, bool):
            return Const(raw)
        if isinstance(raw, str):
            try:
                cond = parse_condition(raw)
            except SyntaxProblem as exc:
                self.add(
                    path,
                    f"{exc.message} in condition {_quoted(raw)}",
                    rule_id,
                    self.text_position(path, exc.offset),
                )
                return None
            line, column = self.text_position(path, 0)
            single = self.text_position(path, 1) != (line, column)
            self.origins[id(cond)] = (path, line, column, single)
            return cond
        if isinstance(raw, dict):
            if len(raw) != 1 or next(iter(raw)) not in ("all", "any", "not"):
                keys = ", ".join(map(str, raw)) or "nothing"
                self.add(
                    path, f"a condition block has exactly one key, all, any or not; found {keys}", rule_id
                )
                return None
            key, body = next(iter(raw.items()))
            inner = f"{path}.{key}"
            if key == "not":
                if isinstance(body, list):
                    items = self.condition_list(body, inner, rule_id)
                    return None if items is None else Not(And(tuple(items)))
                inner_cond = self.condition(body, inner, rule_id)
                return None if inner_cond is None else Not(inner_cond)
            if not isinstance(body, list) or not body:
                self.add(inner, f"'{key}:' takes a non-empty list of conditions", rule_id)
                return None
            items = self.condition_list(body, inner, rule_id)
            if items is None:
                return None
            return And(tuple(items)) if key == "all" else Or(tuple(items))
        self.add(path, "expected a condition: a string, true/false, or an all/any/not block", rule_id)
        return None

    def condition_list(self, body: list[Any], path: str, rule_id: str | None) -> list[Cond] | None:
        out: list[Cond] = []
        ok = True
        for i, item in enumerate(body):
            cond = self.condition(item, f"{path}[{i}]", rule_id)
            if cond is None:
                ok = False
            else:
                out.append(cond)
        return out if ok else None

    def values(self, raw: Any, path: str, rule_id: str | None) -> tuple[dict[str, Any], dict[str, Expr]]:
        if not isinstance(raw, dict):
            self.add(path, "expected a mapping of result keys to values", rule_id)
            return {}, {}
        computed: dict[str, Expr] = {}
        for key, value in raw.items():
            if isinstance(value, str) and value.startswith("="):
                try:
                    computed[key] = parse_expression(value[1:])
                except SyntaxProblem as exc:
                    at = self.text_position(f"{path}.{key}", exc.offset + 1)
                    self.add(f"{path}.{key}", f"{exc.message} in expression {_quoted(value)}", rule_id, at)
        return raw, computed


def _quoted(text: str, most: int = 120) -> str:
    """The text quoted for a message, cut short when long."""
    return repr(text) if len(text) <= most else repr(text[:most]) + f" ({len(text)} characters)"


def _node_index(node: yaml.Node, path: str, out: dict[str, yaml.Node]) -> None:
    out[path] = node
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            _node_index(value_node, f"{path}.{key}" if path else str(key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_index(item, f"{path}[{i}]", out)


def _bound_problem(text: str, source: str) -> Problem | None:
    """The first way the text crosses the document bounds (size, anchors and aliases, depth), if any.

    Reads the YAML event stream only, which keeps no tree, so the check itself stays small.
    """
    size = len(text.encode("utf-8"))
    if size > MAX_DOCUMENT_BYTES:
        return Problem(
            source, 1, 1, None, "", f"the document is {size} bytes; at most {MAX_DOCUMENT_BYTES} are accepted"
        )
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        mark = event.start_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        if isinstance(event, yaml.AliasEvent):
            return Problem(
                source,
                line,
                column,
                None,
                "",
                f"aliases (*{event.anchor}) are not accepted: write the value out in full",
            )
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            return Problem(
                source,
                line,
                column,
                None,
                "",
                f"anchors (&{event.anchor}) are not accepted: write each value out in full",
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                return Problem(
                    source,
                    line,
                    column,
                    None,
                    "",
                    f"the document nests more than {MAX_DEPTH} levels deep here; at most {MAX_DEPTH} "
                    "are accepted",
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return None


def _not_yaml(exc: yaml.YAMLError, source: str) -> RulesetError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        return RulesetError([Problem(source, line, column, None, "", f"not valid YAML: {exc.problem}")])
    return RulesetError([Problem(source, 0, 0, None, "", f"not valid YAML: {exc}")])


def parse_ruleset(text: str, source: str = "<string>") -> Ruleset:
    """Read a ruleset document; raise `RulesetError` listing every located problem found."""
    try:
        bound = _bound_problem(text, source)
    except yaml.YAMLError as exc:
        raise _not_yaml(exc, source) from None
    if bound is not None:
        raise RulesetError([bound])
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise _not_yaml(exc, source) from None
    finally:
        loader.dispose()
    if root is None:
        raise RulesetError([Problem(source, 1, 1, None, "", "the document is empty")])
    reader = _Reader(source)
    reader.loader = _Loader("")
    try:
        data = reader.value(root, "")
    except yaml.YAMLError as exc:
        raise RulesetError([Problem(source, 0, 0, None, "", f"not valid YAML: {exc}")]) from None
    nodes: dict[str, yaml.Node] = {}
    _node_index(root, "", nodes)
    b = _Builder(source, reader.positions, nodes)
    if not isinstance(data, dict):
        b.add("", "a ruleset document is a mapping with keys ruleset, kind, rules, ...")
        raise RulesetError(b.problems)
    return _build(b, data, text, source)


def _build(b: _Builder, data: dict[str, Any], text: str, source: str) -> Ruleset:
    for key in data:
        if key not in TOP_KEYS:
            b.add(
                str(key),
                f"unknown key '{key}'; expected one of {', '.join(TOP_KEYS)}",
                at=b.pos(str(key), False),
            )
    name = data.get("ruleset")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        b.add("ruleset", "expected a kebab-case name such as transfer-approval")
        name = str(name)
    kind = data.get("kind")
    if kind not in KINDS:
        b.add("kind", f"expected one of {', '.join(KINDS)}, found {kind!r}")
        kind = str(kind)
    description = data.get("description", "")
    if not isinstance(description, str):
        b.add("description", "expected text")
        description = str(description)
    hit_policy = data.get("hit_policy", "first")
    if hit_policy not in HIT_POLICIES:
        b.add("hit_policy", f"expected first or collect, found {hit_policy!r}")
        hit_policy = "first"
    facts_raw = data.get("facts", {})
    facts: dict[str, str] = {}
    if not isinstance(facts_raw, dict):
        b.add("facts", "expected a mapping of field path to type, e.g. transfer.qty: int")
    else:
        for path, type_name in facts_raw.items():
            if not FIELD_PATTERN.match(str(path)):
                b.add(
                    f"facts.{path}",
                    f"'{path}' is not a field path like source.floor",
                    at=b.pos(f"facts.{path}", False),
                )
            elif not isinstance(type_name, str):
                b.add(f"facts.{path}", "expected a type name: int, float, str, bool or list[str]")
            else:
                facts[str(path)] = type_name
    rules: list[Rule] = []
    rules_raw = data.get("rules")
    if not isinstance(rules_raw, list) or not rules_raw:
        b.add("rules", "expected a non-empty list of rules")
        rules_raw = []
    for i, raw in enumerate(rules_raw):
        rule = _build_rule(b, raw, i)
        if rule is not None:
            rules.append(rule)
    default_raw = data.get("default")
    default: dict[str, Any] | None = None
    if default_raw is not None:
        if not isinstance(default_raw, dict):
            b.add("default", "expected a mapping of result keys to literal values")
        else:
            default = default_raw
            for key, value in default_raw.items():
                if isinstance(value, str) and value.startswith("="):
                    b.add(f"default.{key}", "the default holds literal values only, not '= expressions'")
    tests: list[RulesetTest] = []
    tests_raw = data.get("tests", [])
    if not isinstance(tests_raw, list):
        b.add("tests", "expected a list of tests")
        tests_raw = []
    for i, raw in enumerate(tests_raw):
        path = f"tests[{i}]"
        if not isinstance(raw, dict):
            b.add(path, "expected a mapping with name, given and expect")
            continue
        for key in raw:
            if key not in TEST_KEYS:
                b.add(
                    f"{path}.{key}",
                    f"unknown key '{key}'; expected name, given, expect",
                    at=b.pos(f"{path}.{key}", False),
                )
        tname = raw.get("name")
        given = raw.get("given")
        expect = raw.get("expect")
        if not isinstance(tname, str) or not tname:
            b.add(f"{path}.name", "every test needs a name")
            tname = f"test {i + 1}"
        if not isinstance(given, dict):
            b.add(f"{path}.given", "expected the facts as a mapping, e.g. {transfer: {qty: 2}}")
            given = {}
        if not isinstance(expect, dict):
            b.add(f"{path}.expect", "expected a mapping of result keys (and optionally rules: [ids])")
            expect = {}
        elif "rules" in expect and not (
            isinstance(expect["rules"], list) and all(isinstance(r, str) for r in expect["rules"])
        ):
            b.add(f"{path}.expect.rules", "expected a list of rule ids")
        tests.append(RulesetTest(tname, given, expect, b.pos(path)))
    if b.problems:
        raise RulesetError(b.problems)
    return Ruleset(
        name=name,
        kind=str(kind),
        description=description,
        hit_policy=str(hit_policy),
        facts=facts,
        rules=rules,
        default=default,
        tests=tests,
        text=text,
        source=source,
        document=data,
        positions=b.positions,
        origins=b.origins,
    )


def _build_rule(b: _Builder, raw: Any, i: int) -> Rule | None:
    path = f"rules[{i}]"
    if not isinstance(raw, dict):
        b.add(path, "expected a rule: a mapping with id, priority, when, then")
        return None
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not RULE_ID_PATTERN.match(rule_id):
        b.add(f"{path}.id", "every rule needs an id made of letters, digits, '-', '_' or '.'")
        rule_id = None
    for key in raw:
        if key not in RULE_KEYS:
            b.add(
                f"{path}.{key}",
                f"unknown key '{key}'; expected one of {', '.join(RULE_KEYS)}",
                rule_id,
                b.pos(f"{path}.{key}", False),
            )
    priority = raw.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        b.add(f"{path}.priority", f"expected a whole number from 0 to {PRIORITY_MAX}", rule_id)
        priority = 0
    elif not 0 <= priority <= PRIORITY_MAX:
        b.add(
            f"{path}.priority", f"priority {priority} is out of range: expected 0 to {PRIORITY_MAX}", rule_id
        )
    description = raw.get("description", "")
    if not isinstance(description, str):
        b.add(f"{path}.description", "expected text", rule_id)
        description = str(description)
    when: Cond | None = None
    if "when" not in raw:
        b.add(path, "the rule has no 'when' condition", rule_id)
    else:
        when = b.condition(raw["when"], f"{path}.when", rule_id)
    then_raw = raw.get("then")
    if then_raw is None:
        b.add(path, "the rule has no 'then' values", rule_id)
        then_raw = {}
    then, computed = b.values(then_raw, f"{path}.then", rule_id)
    if rule_id is None or when is None:
        return None
    return Rule(rule_id, priority, description, when, then, i, computed)
