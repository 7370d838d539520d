"""Reading ruleset documents: the syntax tree, and errors located by line and column."""

from __future__ import annotations

from textwrap import dedent

import pytest

from service.rules.language import Problem, RulesetError, parse_ruleset
from service.rules.language.syntax import (
    And,
    Arith,
    Call,
    Compare,
    Field,
    InList,
    Literal,
    Not,
    Or,
    SyntaxProblem,
    parse_condition,
    parse_expression,
    unparse,
)

GOOD = dedent("""\
    ruleset: transfer-approval
    kind: transfer
    description: Route transfers.
    hit_policy: first
    facts:
      transfer.qty: int
      source.floor: int
    rules:
      - id: small
        priority: 10
        description: small ones pass
        when: transfer.qty < 5
        then: {outcome: approve}
    default: {outcome: route}
    tests:
      - name: small passes
        given: {transfer: {qty: 1}}
        expect: {outcome: approve, rules: [small]}
    """)


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(RulesetError) as info:
        parse_ruleset(text, "r.yaml")
    return info.value.problems


def test_a_document_reads_into_a_ruleset() -> None:
    rs = parse_ruleset(GOOD, "r.yaml")
    assert (rs.name, rs.kind, rs.hit_policy, rs.description) == (
        "transfer-approval",
        "transfer",
        "first",
        "Route transfers.",
    )
    assert rs.facts == {"transfer.qty": "int", "source.floor": "int"}
    assert [(r.id, r.priority, r.description) for r in rs.rules] == [("small", 10, "small ones pass")]
    assert rs.rules[0].when == Compare("<", Field("transfer.qty", 0), Literal(5, 15), 0)
    assert rs.default == {"outcome": "route"}
    assert rs.tests[0].expect == {"outcome": "approve", "rules": ["small"]}
    assert rs.text == GOOD


def test_hit_policy_defaults_to_first() -> None:
    rs = parse_ruleset(GOOD.replace("hit_policy: first\n", ""))
    assert rs.hit_policy == "first"


def test_operator_precedence_puts_and_above_or_and_arithmetic_above_comparison() -> None:
    cond = parse_condition("a.b + 2 * c.d > 3 or not e.f == 1 and g.h in [1, 2]")
    assert isinstance(cond, Or)
    left, right = cond.items
    assert isinstance(left, Compare) and isinstance(left.left, Arith) and left.left.op == "+"
    assert isinstance(left.left.right, Arith) and left.left.right.op == "*"
    assert isinstance(right, And)
    assert isinstance(right.items[0], Not) and isinstance(right.items[1], InList)


def test_parentheses_group_conditions_and_values() -> None:
    cond = parse_condition("(a.b - 1) * 2 >= c.d and (x.y or z.w)")
    assert unparse(cond) == "(a.b - 1) * 2 >= c.d and (x.y == true or z.w == true)"


def test_unparse_round_trips() -> None:
    text = 'a.b != "x" and (c.d < -2.5 or e.f not in ["p", "q"]) and not g.h == null'
    assert unparse(parse_condition(unparse(parse_condition(text)))) == unparse(parse_condition(text))


def test_expressions_may_call_the_allowed_functions() -> None:
    expr = parse_expression(" max(1, ceil(a.b / 3), round(c.d, 2))")
    assert isinstance(expr, Call) and expr.name == "max" and len(expr.args) == 3


@pytest.mark.parametrize(
    ("text", "message", "offset"),
    [
        ("a.b <", "found the end of the text", 5),
        ("a.b < < 3", "found '<'", 6),
        ("a.b == 'x", "unterminated string literal", 7),
        ("a.b == 1 c", "unexpected 'c'", 9),
        ("a.b in 1", "expected '[' to open the list", 7),
        ("a.b in [c.d]", "may only hold literals", 8),
        ("a.b @ 1", "unexpected character '@'", 4),
        ("a.b + 1", "expected a condition", 0),
        ("exec(a.b) > 1", "unknown function 'exec'", 0),
        ("a.__class__ == 1", "unexpected character '.'", 1),
    ],
)
def test_condition_syntax_errors_say_what_was_expected_and_where(
    text: str, message: str, offset: int
) -> None:
    with pytest.raises(SyntaxProblem) as info:
        parse_condition(text)
    assert message in info.value.message
    assert info.value.offset == offset


def test_calls_are_refused_in_conditions_by_type_checks_not_parsed_away() -> None:
    assert isinstance(parse_condition("max(a.b, 1) > 2"), Compare)


def test_a_condition_error_is_located_at_its_line_and_column_in_the_file() -> None:
    text = GOOD.replace("when: transfer.qty < 5", "when: transfer.qty < < 5")
    (problem,) = problems_of(text)
    assert (problem.source, problem.line, problem.column) == ("r.yaml", 12, 26)
    assert problem.rule_id == "small"
    assert problem.path == "rules[0].when"
    assert "expected a field, a literal or '('" in problem.message


def test_an_error_inside_a_quoted_condition_counts_the_quote() -> None:
    text = GOOD.replace("when: transfer.qty < 5", "when: 'transfer.qty < < 5'")
    (problem,) = problems_of(text)
    assert (problem.line, problem.column) == (12, 27)


def test_an_error_in_an_all_block_names_the_item() -> None:
    text = GOOD.replace("when: transfer.qty < 5", "when:\n          all: [transfer.qty < 5, source.floor >]")
    (problem,) = problems_of(text)
    assert problem.path == "rules[0].when.all[1]"
    assert problem.line == 13


def test_an_error_in_a_computed_value_is_located() -> None:
    text = GOOD.replace("then: {outcome: approve}", 'then: {sla_hours: "= max(1,"}')
    (problem,) = problems_of(text)
    assert problem.path == "rules[0].then.sla_hours"
    assert problem.line == 13
    assert "found the end of the text" in problem.message


def test_every_problem_is_reported_not_only_the_first() -> None:
    text = dedent("""\
        ruleset: Not_Kebab
        kind: teleport
        hit_policy: sometimes
        rules:
          - id: a
            priority: 70000
            when: x.y <
            then: {outcome: approve}
          - priority: 1
            when: x.y > 1
            then: {}
        """)
    problems = problems_of(text)
    assert [(p.path, p.line) for p in problems] == [
        ("ruleset", 1),
        ("kind", 2),
        ("hit_policy", 3),
        ("rules[0].priority", 6),
        ("rules[0].when", 7),
        ("rules[1].id", 9),
    ]


def test_unknown_keys_are_errors() -> None:
    text = GOOD.replace("    priority: 10\n", "    priority: 10\n    salience: 3\n")
    (problem,) = problems_of(text)
    assert problem.path == "rules[0].salience" and problem.line == 11 and "unknown key" in problem.message


def test_a_condition_block_has_exactly_one_key() -> None:
    text = GOOD.replace("when: transfer.qty < 5", "when: {all: [transfer.qty < 5], any: [transfer.qty > 1]}")
    (problem,) = problems_of(text)
    assert "exactly one key" in problem.message


def test_invalid_yaml_is_located() -> None:
    (problem,) = problems_of("ruleset: x\nrules: [\n")
    assert problem.line >= 2 and "not valid YAML" in problem.message


def test_dates_stay_text() -> None:
    rs = parse_ruleset(GOOD.replace("description: Route transfers.", "description: 2024-01-01"))
    assert rs.description == "2024-01-01"
