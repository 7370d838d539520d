"""The bounds on ruleset documents, expressions, facts and dry runs: each refused early, located, naming it."""

from __future__ import annotations

import tracemalloc
from textwrap import dedent

import pytest

from service.rules.language import (
    Problem,
    RuleEvaluationError,
    RulesetError,
    compile_ruleset,
    facts_bound_problem,
    parse_ruleset,
)
from service.rules.language.document import MAX_DEPTH, MAX_DOCUMENT_BYTES
from service.rules.language.facts import MAX_FACTS_DEPTH
from service.rules.language.syntax import (
    MAX_INTEGER,
    MAX_STRING_CHARS,
    MAX_TEXT_CHARS,
    MAX_TREE_DEPTH,
    SyntaxProblem,
    parse_condition,
    parse_expression,
)
from service.rules.trial import TrialWorker, check_ruleset, dry_run

HEADER = "ruleset: bounds\nkind: reorder\n"


def billion_laughs(levels: int = 9) -> str:
    """Each level a list of nine aliases of the level before: 9**levels strings once expanded."""
    lines = [HEADER.rstrip(), 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ",".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def reorder(then: str) -> str:
    """A reorder ruleset whose one rule computes `reorder_point` with the expression `then`."""
    return dedent(f"""\
        ruleset: bounds
        kind: reorder
        facts:
          item.case_pack: int
          item.lead_time_days: int
        rules:
          - id: pack
            priority: 1
            when: item.case_pack > 0
            then: {{reorder_point: "{then}"}}
        """)


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(RulesetError) as info:
        parse_ruleset(text, "b.yaml")
    return info.value.problems


def test_a_billion_laughs_document_is_refused_at_its_first_anchor_without_expanding() -> None:
    text = billion_laughs()
    assert len(text.encode()) < 700
    tracemalloc.start()
    try:
        (problem,) = problems_of(text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "anchors (&l0) are not accepted" in problem.message
    assert (problem.line, problem.column) == (3, 5)
    assert peak < 2_000_000


def test_an_alias_is_refused_even_without_an_anchor_the_parser_accepts() -> None:
    (problem,) = problems_of(HEADER + "description: *nowhere\n")
    assert "aliases (*nowhere) are not accepted" in problem.message or "not valid YAML" in problem.message


@pytest.mark.parametrize("style", ["flow", "block"])
def test_a_document_nested_past_the_bound_is_refused_at_the_line_where_it_crosses_it(style: str) -> None:
    depth = 800
    if style == "flow":
        text = HEADER + "rules: " + "[" * depth + "]" * depth + "\n"
    else:
        text = HEADER + "".join(" " * i + f"k{i}:\n" for i in range(depth)) + " " * depth + "v\n"
    (problem,) = problems_of(text)
    assert f"nests more than {MAX_DEPTH} levels" in problem.message
    assert problem.line >= 3


def test_a_document_nested_to_the_bound_is_read() -> None:
    # the root mapping is one level: MAX_DEPTH - 1 lists inside it reach the bound exactly
    inner = MAX_DEPTH - 1
    text = HEADER + "rules: " + "[" * inner + "]" * inner + "\n"
    assert not any("nests" in p.message for p in problems_of(text))


def test_a_document_over_the_size_bound_is_refused_naming_it() -> None:
    text = HEADER + "description: " + "x" * MAX_DOCUMENT_BYTES + "\n"
    (problem,) = problems_of(text)
    assert f"at most {MAX_DOCUMENT_BYTES} are accepted" in problem.message


@pytest.mark.parametrize("number", ["9" * 5000, str(MAX_INTEGER + 1), "-0x" + "f" * 3000])
def test_a_whole_number_out_of_range_in_the_document_is_refused_at_its_key(number: str) -> None:
    (problem,) = problems_of(HEADER + f"default: {{reorder_point: {number}}}\n")
    assert problem.path == "default.reorder_point" and problem.line == 3
    assert "out of range" in problem.message or "integer string conversion" in problem.message


def test_round_with_literal_digits_out_of_range_is_refused_at_the_then_key() -> None:
    (problem,) = problems_of(reorder("= round(item.case_pack, -10000000)"))
    assert (problem.rule_id, problem.path) == ("pack", "rules[0].then.reorder_point")
    assert "round() takes digits from -12 to 12, got -10000000" in problem.message


def test_round_with_literal_digits_in_range_is_read() -> None:
    rule = parse_ruleset(reorder("= round(item.case_pack, -12)")).rules[0]
    assert "reorder_point" in rule.computed


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1" * 5000, "out of range"),
        (str(MAX_INTEGER + 1), "out of range"),
        ("1e999", "too large"),
        ('"' + "s" * (MAX_STRING_CHARS + 1) + '"', f"at most {MAX_STRING_CHARS}"),
        ("(" * 500 + "1" + ")" * 500, f"more than {MAX_TREE_DEPTH} levels"),
        ("-" * 500 + "1", f"more than {MAX_TREE_DEPTH} levels"),
        ("min(" * 100 + "1" + ")" * 100, f"more than {MAX_TREE_DEPTH} levels"),
        (" + ".join(["x"] * 400), f"more than {MAX_TREE_DEPTH} levels"),
        ("x" + " + 1" * MAX_TEXT_CHARS, f"at most {MAX_TEXT_CHARS}"),
    ],
    ids=["digits", "integer", "float", "string", "parentheses", "minus", "calls", "chain", "length"],
)
def test_an_expression_past_a_bound_is_refused_naming_it(text: str, reason: str) -> None:
    with pytest.raises(SyntaxProblem) as info:
        parse_expression(text)
    assert reason in info.value.message


def test_a_condition_nested_in_nots_past_the_bound_is_refused() -> None:
    with pytest.raises(SyntaxProblem) as info:
        parse_condition("not " * 500 + "x")
    assert f"more than {MAX_TREE_DEPTH} levels" in info.value.message


def test_the_largest_whole_number_is_a_literal() -> None:
    assert parse_expression(f"-{MAX_INTEGER}").value == -MAX_INTEGER  # type: ignore[union-attr]


def evaluate_pack(then: str, item: dict[str, object]) -> object:
    evaluator = compile_ruleset(parse_ruleset(reorder(then)), "python")
    return evaluator.evaluate({"item": item}, "none").result["reorder_point"]


def test_round_with_computed_digits_out_of_range_is_refused_naming_the_rule_and_value() -> None:
    with pytest.raises(RuleEvaluationError) as info:
        evaluate_pack(
            "= round(item.case_pack, 0 - item.lead_time_days)",
            {"case_pack": 10_000_000, "lead_time_days": 10_000_000},
        )
    assert (info.value.rule_id, info.value.path) == ("pack", "rules[0].then.reorder_point")
    assert "round() takes digits from -12 to 12, got -10000000" in str(info.value)


def test_round_with_computed_digits_in_range_computes() -> None:
    value = evaluate_pack(
        "= round(item.case_pack, 0 - item.lead_time_days)", {"case_pack": 1234, "lead_time_days": 2}
    )
    assert value == 1200


@pytest.mark.parametrize(
    ("then", "item"),
    [
        ("= item.case_pack * item.case_pack", {"case_pack": 10**300}),
        ("= item.case_pack * item.case_pack", {"case_pack": 2**40}),
        ("= item.lead_time_days * 1000000", {"case_pack": 1, "lead_time_days": "text from a dry run"}),
        ("= ceil(item.case_pack / 1)", {"case_pack": 10**300}),
    ],
    ids=["huge-operand", "huge-result", "text-operand", "huge-call"],
)
def test_arithmetic_outside_the_number_range_is_refused(then: str, item: dict[str, object]) -> None:
    with pytest.raises(RuleEvaluationError) as info:
        evaluate_pack(then, item)
    assert info.value.path == "rules[0].then.reorder_point"


@pytest.mark.parametrize(
    ("facts", "path"),
    [
        ({"a": {"b": [{"c": 1}]}}, None),
        ({"item": {"case_pack": 10**20}}, "facts.item.case_pack"),
        ({"item": {"codes": [1, -(10**20)]}}, "facts.item.codes[1]"),
    ],
)
def test_facts_hold_whole_numbers_within_the_range(facts: dict[str, object], path: str | None) -> None:
    found = facts_bound_problem(facts)
    assert (found[0] if found else None) == path


def test_facts_nested_past_the_bound_are_refused_naming_where() -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(1000):
        node["n"] = {}
        node = node["n"]  # type: ignore[assignment]
    found = facts_bound_problem(deep)
    assert found is not None
    assert found[0] == "facts" + ".n" * MAX_FACTS_DEPTH
    assert f"more than {MAX_FACTS_DEPTH} levels" in found[1]


def test_a_dry_run_evaluates_in_the_trial_process(trials: TrialWorker) -> None:
    text = reorder("= item.case_pack * 2")
    evaluation = dry_run(trials, text, "b.yaml", {"item": {"case_pack": 6}}, "rules", "durable", 3)
    assert (evaluation.result, evaluation.matched, evaluation.engine) == (
        {"reorder_point": 12},
        ["pack"],
        "durable",
    )
    assert evaluation.ruleset["version"] == 3


def test_a_dry_run_that_cannot_compute_is_refused_naming_the_rule(trials: TrialWorker) -> None:
    text = reorder("= round(item.case_pack, 0 - item.lead_time_days)")
    facts = {"item": {"case_pack": 10_000_000, "lead_time_days": 10_000_000}}
    with pytest.raises(RuleEvaluationError) as info:
        dry_run(trials, text, "b.yaml", facts, "none", "python", 1)
    assert (info.value.rule_id, info.value.path) == ("pack", "rules[0].then.reorder_point")


def test_a_dry_run_of_text_past_the_bounds_is_refused_with_located_problems(trials: TrialWorker) -> None:
    with pytest.raises(RulesetError) as info:
        dry_run(trials, reorder("= round(item.case_pack, -13)"), "b.yaml", {}, "none", "python", 1)
    assert info.value.problems[0].path == "rules[0].then.reorder_point"


def test_a_dry_run_over_its_time_limit_is_refused_naming_it_and_the_next_one_runs(
    trials: TrialWorker,
) -> None:
    text = reorder("= item.case_pack * 2")
    with pytest.raises(RuleEvaluationError) as info:
        dry_run(trials, text, "b.yaml", {"item": {"case_pack": 1}}, "none", "python", 1, timeout=0)
    assert "did not finish within 0 s, the time limit of a dry run" in str(info.value)
    again = dry_run(trials, text, "b.yaml", {"item": {"case_pack": 1}}, "none", "python", 1)
    assert again.result == {"reorder_point": 2}


def test_embedded_tests_run_on_both_engines_only_within_the_trial_time_limit(trials: TrialWorker) -> None:
    text = reorder("= item.case_pack * 2") + dedent("""\
        tests:
          - name: doubles the pack
            given: {item: {case_pack: 3}}
            expect: {reorder_point: 6}
        """)
    report = check_ruleset(trials, parse_ruleset(text, "b.yaml"), durable_timeout=0)
    assert report.tests == []
    assert "did not load and test the ruleset within 0 s" in report.errors[0].message
    report = check_ruleset(trials, parse_ruleset(text, "b.yaml"))
    assert [(t.engine, t.passed) for t in report.tests] == [("python", True), ("durable", True)]
