"""The syntax tree of conditions and `= expression` values, and the tokenizer and parser that build it.

The grammar is small on purpose: field paths, literals, `== != < <= > >=`, `in` / `not in` a list,
`and` / `or` / `not`, `+ - * /`, parentheses, and calls to `min max ceil floor round` (values only).
Nothing here evaluates anything: there is no `eval`, no attribute access and no other calls.

Every text is bounded so that no parse, check or evaluation costs more than a small constant: its length,
the depth of its tree, the length of a string literal, the size of a whole number and `round`'s digits
(see "Limits" in docs/rulesets.md).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

Scalar = int | float | str | bool | None


class SyntaxProblem(ValueError):
    """A condition or expression that does not parse; `offset` is the character where it went wrong."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Field:
    path: str
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Literal:
    value: Scalar
    offset: int = 0


@dataclass(frozen=True, slots=True)
class ListLiteral:
    items: tuple[Literal, ...]
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Arith:
    op: str  # + - * /
    left: Expr
    right: Expr
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Expr, ...]
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Compare:
    op: str  # == != < <= > >=
    left: Expr
    right: Expr
    offset: int = 0


@dataclass(frozen=True, slots=True)
class InList:
    left: Expr
    items: ListLiteral
    negated: bool
    offset: int = 0


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Cond, ...]
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Cond, ...]
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Not:
    item: Cond
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Const:
    """A condition that is always true or always false (`when: true`)."""

    value: bool
    offset: int = 0


Expr = Field | Literal | ListLiteral | Arith | Call
Cond = Compare | InList | And | Or | Not | Const
Node = Expr | Cond

MAX_TEXT_CHARS = 8192  # one condition or `= expression` (room for an `in` list of a few hundred codes)
MAX_TREE_DEPTH = 32  # operators and parentheses inside one another
MAX_STRING_CHARS = 200  # one string literal
MAX_INTEGER = 2**53 - 1  # whole numbers beyond this lose precision as the doubles durable_rules uses
ROUND_DIGITS = 12  # round(x, d) takes d from -12 to 12

COMPARE_OPS = ("==", "!=", "<", "<=", ">", ">=")
FUNCTIONS = {"min": (1, 99), "max": (1, 99), "ceil": (1, 1), "floor": (1, 1), "round": (1, 2)}
KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\["\\nt])*"|'(?:[^'\\]|\\['\\nt])*')
  | (?P<name>[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*)
  | (?P<op>==|!=|<=|>=|<|>|\+|-|\*|/|\(|\)|\[|\]|,)
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "'": "'", "\\": "\\"}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # number string name op end
    text: str
    offset: int


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            snippet = text[pos : pos + 10]
            if text[pos] in "\"'":
                raise SyntaxProblem("unterminated string literal", pos)
            raise SyntaxProblem(f"unexpected character {snippet[0]!r}", pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


class _Parser:
    """Precedence climbing over: or < and < not < comparison < + - < * / < unary - < primary."""

    def __init__(self, text: str) -> None:
        if len(text) > MAX_TEXT_CHARS:
            raise SyntaxProblem(
                f"the text is {len(text)} characters long; at most {MAX_TEXT_CHARS} are accepted",
                MAX_TEXT_CHARS,
            )
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    def enter(self, offset: int) -> None:
        """One level deeper (a parenthesis, a unary minus, a `not`, a call): refused past the bound."""
        self.depth += 1
        if self.depth > MAX_TREE_DEPTH:
            raise SyntaxProblem(f"nested more than {MAX_TREE_DEPTH} levels deep; simplify it", offset)

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def expect(self, text: str, what: str) -> Token:
        if self.tok.text != text or self.tok.kind not in ("op", "name"):
            raise SyntaxProblem(f"expected {what}, found {_describe(self.tok)}", self.tok.offset)
        return self.take()

    def is_word(self, word: str) -> bool:
        return self.tok.kind == "name" and self.tok.text == word

    def parse_or(self) -> Node:
        first = self.parse_and()
        items = [first]
        while self.is_word("or"):
            self.take()
            items.append(self.parse_and())
        return first if len(items) == 1 else Or(tuple(_cond(x) for x in items), _offset(first))

    def parse_and(self) -> Node:
        first = self.parse_not()
        items = [first]
        while self.is_word("and"):
            self.take()
            items.append(self.parse_not())
        return first if len(items) == 1 else And(tuple(_cond(x) for x in items), _offset(first))

    def parse_not(self) -> Node:
        if self.is_word("not"):
            start = self.take().offset
            self.enter(start)
            inner = _cond(self.parse_not())
            self.depth -= 1
            return Not(inner, start)
        return self.parse_comparison()

    def parse_comparison(self) -> Node:
        left = self.parse_sum()
        tok = self.tok
        if tok.kind == "op" and tok.text in COMPARE_OPS:
            self.take()
            right = self.parse_sum()
            return Compare(tok.text, _expr(left), _expr(right), _offset(left))
        if self.is_word("in"):
            self.take()
            return InList(_expr(left), self.parse_list(), False, _offset(left))
        if self.is_word("not") and self.tokens[self.i + 1].text == "in":
            self.take()
            self.take()
            return InList(_expr(left), self.parse_list(), True, _offset(left))
        return left

    def parse_list(self) -> ListLiteral:
        start = self.expect("[", "'[' to open the list after 'in'").offset
        items: list[Literal] = []
        while True:
            if self.tok.text == "]" and self.tok.kind == "op":
                break
            item = self.parse_unary()
            if not isinstance(item, Literal):
                raise SyntaxProblem("a list after 'in' may only hold literals", _offset(item))
            items.append(item)
            if self.tok.kind == "op" and self.tok.text == ",":
                self.take()
                continue
            if not (self.tok.kind == "op" and self.tok.text == "]"):
                raise SyntaxProblem(
                    f"expected ',' or ']' in the list, found {_describe(self.tok)}", self.tok.offset
                )
        self.take()
        if not items:
            raise SyntaxProblem("the list after 'in' is empty", start)
        return ListLiteral(tuple(items), start)

    def parse_sum(self) -> Node:
        left = self.parse_product()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            op = self.take().text
            right = self.parse_product()
            left = Arith(op, _expr(left), _expr(right), _offset(left))
        return left

    def parse_product(self) -> Node:
        left = self.parse_unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/"):
            op = self.take().text
            right = self.parse_unary()
            left = Arith(op, _expr(left), _expr(right), _offset(left))
        return left

    def parse_unary(self) -> Node:
        if self.tok.kind == "op" and self.tok.text == "-":
            start = self.take().offset
            self.enter(start)
            operand = self.parse_unary()
            self.depth -= 1
            if (
                isinstance(operand, Literal)
                and isinstance(operand.value, int | float)
                and not isinstance(operand.value, bool)
            ):
                return Literal(-operand.value, start)
            return Arith("-", Literal(0, start), _expr(operand), start)
        return self.parse_primary()

    def parse_primary(self) -> Node:
        tok = self.take()
        if tok.kind == "number":
            return Literal(_number(tok), tok.offset)
        if tok.kind == "string":
            value = _unquote(tok.text)
            if len(value) > MAX_STRING_CHARS:
                raise SyntaxProblem(
                    f"the string is {len(value)} characters long; at most {MAX_STRING_CHARS} are accepted",
                    tok.offset,
                )
            return Literal(value, tok.offset)
        if tok.kind == "op" and tok.text == "(":
            self.enter(tok.offset)
            inner = self.parse_or()
            self.expect(")", "')' to close the parenthesis")
            self.depth -= 1
            return inner
        if tok.kind == "name":
            if tok.text == "true":
                return Literal(True, tok.offset)
            if tok.text == "false":
                return Literal(False, tok.offset)
            if tok.text == "null":
                return Literal(None, tok.offset)
            if tok.text in KEYWORDS:
                raise SyntaxProblem(f"expected a field, a literal or '(', found '{tok.text}'", tok.offset)
            if self.tok.kind == "op" and self.tok.text == "(":
                return self.parse_call(tok)
            return Field(tok.text, tok.offset)
        raise SyntaxProblem(f"expected a field, a literal or '(', found {_describe(tok)}", tok.offset)

    def parse_call(self, name: Token) -> Call:
        if name.text not in FUNCTIONS:
            allowed = ", ".join(sorted(FUNCTIONS))
            raise SyntaxProblem(f"unknown function '{name.text}': only {allowed} may be called", name.offset)
        self.take()
        self.enter(name.offset)
        args: list[Expr] = []
        if not (self.tok.kind == "op" and self.tok.text == ")"):
            while True:
                args.append(_expr(self.parse_sum()))
                if self.tok.kind == "op" and self.tok.text == ",":
                    self.take()
                    continue
                break
        self.expect(")", f"',' or ')' in the call to {name.text}")
        self.depth -= 1
        low, high = FUNCTIONS[name.text]
        if not low <= len(args) <= high:
            count = f"{low}" if low == high else f"{low} to {high}"
            raise SyntaxProblem(f"{name.text}() takes {count} argument(s), got {len(args)}", name.offset)
        if name.text == "round" and len(args) == 2:
            digits = args[1]
            if (
                isinstance(digits, Literal)
                and isinstance(digits.value, int)
                and not isinstance(digits.value, bool)
                and not -ROUND_DIGITS <= digits.value <= ROUND_DIGITS
            ):
                raise SyntaxProblem(
                    f"round() takes digits from -{ROUND_DIGITS} to {ROUND_DIGITS}, got {digits.value}",
                    digits.offset,
                )
        return Call(name.text, tuple(args), name.offset)

    def finish(self, node: Node) -> Node:
        if self.tok.kind != "end":
            raise SyntaxProblem(
                f"unexpected {_describe(self.tok)} after a complete expression", self.tok.offset
            )
        # a long chain such as `a + a + ... + a` is deep without any parenthesis
        if tree_depth(node) > MAX_TREE_DEPTH:
            raise SyntaxProblem(f"nested more than {MAX_TREE_DEPTH} levels deep; simplify it", node.offset)
        return node


def _number(tok: Token) -> int | float:
    """A number literal within the bounds: whole numbers up to MAX_INTEGER, finite decimals."""
    text = tok.text
    if any(c in text for c in ".eE"):
        value = float(text)
        if math.isfinite(value):
            return value
        raise SyntaxProblem(f"the number {text} is too large to be represented", tok.offset)
    digits = text.lstrip("0")
    if len(digits) > len(str(MAX_INTEGER)) or int(text) > MAX_INTEGER:
        shown = text if len(text) <= 30 else f"{text[:12]}... ({len(text)} digits)"
        raise SyntaxProblem(
            f"the whole number {shown} is out of range; at most {MAX_INTEGER} (2**53 - 1) is accepted",
            tok.offset,
        )
    return int(text)


def tree_depth(node: Node) -> int:
    """How many nodes deep the tree is, counted without recursion."""
    deepest = 0
    stack: list[tuple[Node, int]] = [(node, 1)]
    while stack:
        n, depth = stack.pop()
        deepest = max(deepest, depth)
        children: tuple[Node, ...] = ()
        if isinstance(n, Arith | Compare):
            children = (n.left, n.right)
        elif isinstance(n, Call):
            children = n.args
        elif isinstance(n, InList):
            children = (n.left,)
        elif isinstance(n, And | Or):
            children = n.items
        elif isinstance(n, Not):
            children = (n.item,)
        stack.extend((c, depth + 1) for c in children)
    return deepest


def _describe(tok: Token) -> str:
    return "the end of the text" if tok.kind == "end" else f"'{tok.text}'"


def _offset(node: Node) -> int:
    return node.offset


def _cond(node: Node) -> Cond:
    if isinstance(node, Compare | InList | And | Or | Not | Const):
        return node
    if isinstance(node, Literal) and isinstance(node.value, bool):
        return Const(node.value, node.offset)
    if isinstance(node, Field):
        # a bare boolean field reads as `field == true`
        return Compare("==", node, Literal(True, node.offset), node.offset)
    raise SyntaxProblem("expected a condition (a comparison, 'in', 'and', 'or' or 'not')", node.offset)


def _expr(node: Node) -> Expr:
    if isinstance(node, Field | Literal | ListLiteral | Arith | Call):
        return node
    raise SyntaxProblem("expected a value here, not a condition", node.offset)


def parse_condition(text: str) -> Cond:
    parser = _Parser(text)
    if parser.tok.kind == "end":
        raise SyntaxProblem("the condition is empty", 0)
    return _cond(parser.finish(parser.parse_or()))


def parse_expression(text: str) -> Expr:
    parser = _Parser(text)
    if parser.tok.kind == "end":
        raise SyntaxProblem("the expression after '=' is empty", 0)
    return _expr(parser.finish(parser.parse_or()))


def fields_of(node: Node) -> list[str]:
    """Field paths a node reads, in first-seen order, without repeats."""
    seen: dict[str, None] = {}

    def walk(n: Node) -> None:
        if isinstance(n, Field):
            seen.setdefault(n.path, None)
        elif isinstance(n, Arith | Compare):
            walk(n.left)
            walk(n.right)
        elif isinstance(n, Call):
            for a in n.args:
                walk(a)
        elif isinstance(n, InList):
            walk(n.left)
        elif isinstance(n, And | Or):
            for c in n.items:
                walk(c)
        elif isinstance(n, Not):
            walk(n.item)

    walk(node)
    return list(seen)


def format_literal(value: Scalar) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


_PREC = {"or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "-": 5, "*": 6, "/": 6, "atom": 9}


def unparse(node: Node) -> str:
    """The canonical text of a node; parsing it gives the same tree (offsets aside)."""
    return _unparse(node)[0]


def _unparse(node: Node) -> tuple[str, int]:
    if isinstance(node, Field):
        return node.path, _PREC["atom"]
    if isinstance(node, Literal):
        return format_literal(node.value), _PREC["atom"]
    if isinstance(node, ListLiteral):
        return "[" + ", ".join(format_literal(i.value) for i in node.items) + "]", _PREC["atom"]
    if isinstance(node, Call):
        return node.name + "(" + ", ".join(unparse(a) for a in node.args) + ")", _PREC["atom"]
    if isinstance(node, Arith):
        p = _PREC[node.op]
        left = _wrap(node.left, p)
        # right operand of - and / binds tighter: a - (b - c)
        right = _wrap(node.right, p + 1)
        return f"{left} {node.op} {right}", p
    if isinstance(node, Compare):
        p = _PREC["cmp"]
        return f"{_wrap(node.left, p + 1)} {node.op} {_wrap(node.right, p + 1)}", p
    if isinstance(node, InList):
        p = _PREC["cmp"]
        word = "not in" if node.negated else "in"
        return f"{_wrap(node.left, p + 1)} {word} {unparse(node.items)}", p
    if isinstance(node, And | Or):
        word = "and" if isinstance(node, And) else "or"
        p = _PREC[word]
        return f" {word} ".join(_wrap(c, p + 1) for c in node.items), p
    if isinstance(node, Not):
        return "not " + _wrap(node.item, _PREC["not"]), _PREC["not"]
    return ("true" if node.value else "false"), _PREC["atom"]


def _wrap(node: Node, min_prec: int) -> str:
    text, prec = _unparse(node)
    return f"({text})" if prec < min_prec else text
