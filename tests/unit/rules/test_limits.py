"""durable_rules' structural limits: refused at check time, with a located error, before they can bite."""

from __future__ import annotations

import pytest

from service.rules.language import compile_ruleset, parse_ruleset
from service.rules.language.analysis import analyse
from service.rules.language.compiler import compiled_ruleset
from service.rules.language.durable_engine import DurableEvaluator, EngineError
from service.rules.language.limits import limit_problems
from service.rules.trial import TrialWorker, check_ruleset, durable_trial

HEAD = "ruleset: limits-{n}\nkind: transfer\nhit_policy: collect\nfacts: {{transfer.qty: int, source.type: str}}\nrules:\n"


def text_of(conditions: list[str], name: str = "x") -> str:
    rules = "".join(
        f"  - {{id: r{i}, priority: 1, when: '{c}', then: {{sla_hours: 1}}}}\n"
        for i, c in enumerate(conditions)
    )
    return HEAD.format(n=name) + rules


def limit_messages(text: str) -> list[str]:
    rs = parse_ruleset(text, "l.yaml")
    return [p.message for p in limit_problems(rs, analyse(rs).normal)]


def test_more_than_4096_rules_are_refused() -> None:
    messages = limit_messages(text_of([f"transfer.qty == {i}" for i in range(4097)]))
    assert messages == ["4097 rules: durable_rules allows at most 4096"]


def test_500_different_conditions_side_by_side_are_refused() -> None:
    (message,) = limit_messages(text_of([f"transfer.qty == {i}" for i in range(500)]))
    assert "more than 499 different conditions" in message


def test_499_conditions_side_by_side_are_accepted_and_load(trials: TrialWorker) -> None:
    text = text_of([f"transfer.qty == {i}" for i in range(499)], "wide")
    assert limit_messages(text) == []
    status, _ = durable_trial(trials, parse_ruleset(text))
    assert status == "ok"


def test_a_long_in_list_counts_every_item() -> None:
    items = ", ".join(f'"s{i}"' for i in range(520))
    (message,) = limit_messages(text_of([f"source.type in [{items}]"]))
    assert "more than 499 different conditions" in message


def test_a_shared_first_condition_splits_a_wide_ruleset_into_groups() -> None:
    conditions = [f'source.type == "t{i % 5}" and transfer.qty == {i}' for i in range(600)]
    assert limit_messages(text_of(conditions)) == []


def test_more_than_64_conditions_true_at_once_are_refused() -> None:
    (message,) = limit_messages(text_of([f"transfer.qty > {i}" for i in range(65)]))
    assert "up to 65 conditions could be true at once" in message


def test_equality_tests_on_one_field_count_once() -> None:
    assert limit_messages(text_of([f"transfer.qty == {i}" for i in range(300)])) == []


def test_the_co_true_limit_is_real_in_durable_rules() -> None:
    rs = parse_ruleset(text_of([f"transfer.qty > {i}" for i in range(65)], "co-true"))
    evaluator = DurableEvaluator(compiled_ruleset(rs), fallback=False)
    with pytest.raises(EngineError, match="303"):
        evaluator.evaluate({"transfer": {"qty": 1000}})


def test_a_refused_evaluation_falls_back_to_the_python_engine_and_says_so() -> None:
    rs = parse_ruleset(text_of([f"transfer.qty > {i}" for i in range(65)], "co-true-fallback"))
    out = DurableEvaluator(compiled_ruleset(rs)).with_version(4).evaluate({"transfer": {"qty": 1000}})
    assert out.engine == "python"
    assert out.ruleset["version"] == 4
    assert len(out.matched) == 65


def test_64_conditions_true_at_once_are_accepted() -> None:
    rs = parse_ruleset(text_of([f"transfer.qty > {i}" for i in range(64)], "co-true-64"))
    assert limit_problems(rs, analyse(rs).normal) == []
    out = compile_ruleset(rs, "durable").evaluate({"transfer": {"qty": 1000}})
    assert (out.engine, len(out.matched)) == ("durable", 64)


def test_check_ruleset_reports_a_limit_as_a_located_error(trials: TrialWorker) -> None:
    report = check_ruleset(
        trials, parse_ruleset(text_of([f"transfer.qty > {i}" for i in range(70)]), "big.yaml")
    )
    (error,) = report.errors
    assert (error.source, error.path, error.line) == ("big.yaml", "rules", 6)


def test_compile_for_durable_refuses_what_crosses_a_limit() -> None:
    rs = parse_ruleset(text_of([f"transfer.qty == {i}" for i in range(520)], "too-wide"))
    with pytest.raises(Exception, match="more than 499"):
        compile_ruleset(rs, "durable")


def test_a_trial_over_its_time_limit_is_killed_and_the_next_trial_still_runs(trials: TrialWorker) -> None:
    # Loading 499 rules takes far longer than a millisecond, so the child overruns and is killed.
    slow = parse_ruleset(text_of([f"transfer.qty == {i}" for i in range(499)], name="slow"))
    status, reason = durable_trial(trials, slow, timeout=0.001)
    assert status == "error" and "did not load and test the ruleset within 0.001 s" in reason
    status, results = durable_trial(
        trials, parse_ruleset(text_of(["transfer.qty > 1"], name="after")), timeout=30
    )
    assert status == "ok" and results == []
