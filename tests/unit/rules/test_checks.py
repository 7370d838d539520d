"""Publish-time checks: declared facts against the kind, types, result keys, ids, warnings, embedded tests."""

from __future__ import annotations

from textwrap import dedent

import pytest

from service.rules.language import Problem, RulesetError, compile_ruleset, parse_ruleset
from service.rules.language.analysis import analyse
from service.rules.trial import TrialWorker, check_ruleset, check_text


def ruleset(
    rules: str,
    *,
    facts: str = "transfer.qty: int\n  source.type: str\n  same_region: bool",
    policy: str = "first",
    extra: str = "",
) -> str:
    return (
        "ruleset: checks\nkind: transfer\n"
        f"hit_policy: {policy}\nfacts:\n  {facts}\nrules:\n{dedent(rules)}{extra}"
    )


def errors(text: str) -> list[Problem]:
    return analyse(parse_ruleset(text, "c.yaml")).errors


def warnings(text: str) -> list[Problem]:
    return analyse(parse_ruleset(text, "c.yaml")).warnings


def test_a_field_read_but_not_declared_is_an_error_located_at_the_field() -> None:
    (p,) = errors(ruleset("  - {id: a, priority: 1, when: source.floor > 2, then: {outcome: approve}}\n"))
    assert "'source.floor' is not declared in facts" in p.message
    assert "add 'source.floor: int'" in p.message
    assert (p.line, p.column, p.rule_id) == (9, 30, "a")


def test_a_declared_field_the_kind_does_not_supply_is_an_error() -> None:
    (p,) = errors(
        ruleset(
            "  - {id: a, priority: 1, when: transfer.qty > 2, then: {outcome: approve}}\n",
            facts="transfer.qty: int\n  weather.rain: bool",
        )
    )
    assert p.path == "facts.weather.rain" and "does not supply 'weather.rain'" in p.message


def test_a_field_declared_with_another_type_than_supplied_is_an_error() -> None:
    (p,) = errors(
        ruleset(
            "  - {id: a, priority: 1, when: transfer.qty > 2, then: {outcome: approve}}\n",
            facts="transfer.qty: float",
        )
    )
    assert "supplied as int, not float" in p.message


def test_comparing_text_with_a_number_is_an_error() -> None:
    (p,) = errors(ruleset("  - {id: a, priority: 1, when: source.type < 3, then: {outcome: approve}}\n"))
    assert "cannot compare str with int" in p.message


def test_an_in_list_of_the_wrong_type_is_an_error() -> None:
    (p,) = errors(
        ruleset('  - {id: a, priority: 1, when: "transfer.qty in [1, \\"2\\"]", then: {outcome: approve}}\n')
    )
    assert "holds str" in p.message


def test_ordering_booleans_is_an_error() -> None:
    (p,) = errors(ruleset("  - {id: a, priority: 1, when: same_region < true, then: {outcome: approve}}\n"))
    assert "cannot compare bool with bool using <" in p.message


def test_dividing_by_a_field_in_a_condition_is_an_error() -> None:
    (p,) = errors(
        ruleset("  - {id: a, priority: 1, when: 10 / transfer.qty > 2, then: {outcome: approve}}\n")
    )
    assert "divide only by a non-zero number" in p.message


def test_a_then_key_the_kind_does_not_have_is_an_error() -> None:
    (p,) = errors(ruleset("  - {id: a, priority: 1, when: transfer.qty > 2, then: {discount: 5}}\n"))
    assert p.path == "rules[0].then.discount" and "not a result of the transfer decision" in p.message


def test_a_then_value_of_the_wrong_type_is_an_error() -> None:
    (p,) = errors(ruleset("  - {id: a, priority: 1, when: transfer.qty > 2, then: {sla_hours: soon}}\n"))
    assert "'sla_hours' is int" in p.message


def test_a_computed_value_giving_a_float_for_an_int_key_is_an_error() -> None:
    (p,) = errors(
        ruleset('  - {id: a, priority: 1, when: transfer.qty > 2, then: {sla_hours: "= transfer.qty / 2"}}\n')
    )
    assert "wrap it in ceil(), floor() or round()" in p.message


def test_rule_ids_are_unique() -> None:
    (p,) = errors(
        ruleset("""\
          - {id: a, priority: 1, when: transfer.qty > 2, then: {outcome: approve}}
          - {id: a, priority: 2, when: transfer.qty > 3, then: {outcome: reject}}
        """)
    )
    assert p.path == "rules[1].id" and "duplicate rule id 'a'" in p.message


def test_a_comparison_without_a_lone_field_is_an_error() -> None:
    (p,) = errors(
        ruleset("  - {id: a, priority: 1, when: transfer.qty * transfer.qty > 4, then: {outcome: approve}}\n")
    )
    assert "put a field alone" in p.message


def test_a_rule_after_an_always_true_rule_is_unreachable_under_first_hit() -> None:
    (w,) = warnings(
        ruleset("""\
          - {id: catch-all, priority: 9, when: true, then: {outcome: route}}
          - {id: later, priority: 1, when: transfer.qty > 3, then: {outcome: reject}}
        """)
    )
    assert w.rule_id == "later" and "unreachable" in w.message and "catch-all" in w.message


def test_a_rule_with_the_same_condition_as_an_earlier_one_is_unreachable_under_first_hit() -> None:
    (w,) = warnings(
        ruleset("""\
          - {id: a, priority: 5, when: transfer.qty > 3, then: {outcome: route}}
          - {id: b, priority: 1, when: not (transfer.qty <= 3), then: {outcome: reject}}
        """)
    )
    assert w.rule_id == "b" and "same condition" in w.message


def test_duplicate_conditions_are_reported_under_collect() -> None:
    (w,) = warnings(
        ruleset(
            """\
          - {id: a, priority: 5, when: transfer.qty > 3, then: {outcome: route}}
          - {id: b, priority: 1, when: 3 < transfer.qty, then: {sla_hours: 4}}
        """,
            policy="collect",
        )
    )
    assert w.rule_id == "b" and "duplicate condition" in w.message


def test_compile_refuses_a_ruleset_with_errors() -> None:
    text = ruleset("  - {id: a, priority: 1, when: source.floor > 2, then: {outcome: approve}}\n")
    with pytest.raises(RulesetError):
        compile_ruleset(parse_ruleset(text), "python")


TESTED = ruleset(
    "  - {id: big, priority: 1, when: transfer.qty > 10, then: {outcome: reject}}\n",
    extra=dedent("""\
        default: {outcome: approve}
        tests:
          - name: a big transfer is rejected
            given: {transfer: {qty: 20}}
            expect: {outcome: reject, rules: [big]}
          - name: a small one falls to the default
            given: {transfer: {qty: 2}}
            expect: {outcome: approve, used_default: true}
        """),
)


def test_check_runs_the_embedded_tests_on_both_engines(trials: TrialWorker) -> None:
    report = check_ruleset(trials, parse_ruleset(TESTED, "t.yaml"))
    assert report.errors == []
    assert [(t.name, t.engine, t.passed) for t in report.tests] == [
        ("a big transfer is rejected", "python", True),
        ("a small one falls to the default", "python", True),
        ("a big transfer is rejected", "durable", True),
        ("a small one falls to the default", "durable", True),
    ]
    assert report.ok


def test_a_failing_embedded_test_fails_the_report_and_says_why(trials: TrialWorker) -> None:
    report = check_ruleset(
        trials, parse_ruleset(TESTED.replace("expect: {outcome: reject", "expect: {outcome: route"), "t.yaml")
    )
    failed = [t for t in report.tests if not t.passed]
    assert [t.engine for t in failed] == ["python", "durable"]
    assert failed[0].message == "'outcome' is 'reject', expected 'route'"
    assert failed[0].actual == {"outcome": "reject", "rules": ["big"]}
    assert not report.ok and report.errors == []


def test_a_test_expecting_an_unknown_rule_is_an_error() -> None:
    (p,) = errors(TESTED.replace("rules: [big]", "rules: [huge]"))
    assert "no rule has the id 'huge'" in p.message


def test_the_report_is_json_ready(trials: TrialWorker) -> None:
    data = check_ruleset(trials, parse_ruleset(TESTED, "t.yaml")).to_dict()
    assert data["ok"] is True and len(data["tests"]) == 4 and data["errors"] == []


def test_check_text_reports_parse_problems_as_errors(trials: TrialWorker) -> None:
    ruleset, report = check_text(
        trials, "ruleset: x\nkind: transfer\nrules:\n  - {id: a, when: 'q <', then: {}}\n", "p.yaml"
    )
    assert ruleset is None and not report.ok
    assert [(p.line, p.path) for p in report.errors] == [(4, "rules[0].when")]


def test_check_text_checks_a_ruleset_that_parses(trials: TrialWorker) -> None:
    ruleset, report = check_text(trials, TESTED, "t.yaml")
    assert ruleset is not None and ruleset.name == "checks" and report.ok


def test_a_type_error_inside_a_block_is_located_at_its_item() -> None:
    text = ruleset("""\
          - id: a
            priority: 1
            when:
              all:
                - transfer.qty > 2
                - source.type == 4
            then: {outcome: approve}
        """)
    (p,) = errors(text)
    assert (p.path, p.line, p.column) == ("rules[0].when.all[1]", 14, 9)
    assert "cannot compare str with int" in p.message


def test_an_approver_or_escalation_role_no_key_can_hold_is_an_error(trials: TrialWorker) -> None:
    text = ruleset(
        "  - {id: a, priority: 1, when: transfer.qty > 2, then: {outcome: route,\n"
        "      approvers: [store_manager, merchandise_director], escalation: [regional_mgr]}}\n"
    )
    report = check_ruleset(trials, parse_ruleset(text, "c.yaml"))
    found = sorted((p.path, p.rule_id, p.message) for p in report.errors)
    assert [(path, rule) for path, rule, _ in found] == [
        ("rules[0].then.approvers", "a"),
        ("rules[0].then.escalation", "a"),
    ]
    assert "'merchandise_director' is not an approver role" in found[0][2]
    assert "'regional_mgr' is not an approver role" in found[1][2] and "district_manager" in found[1][2]
    assert not report.ok and report.tests == []
    fixed = text.replace("merchandise_director", "finance").replace("regional_mgr", "regional_manager")
    assert check_ruleset(trials, parse_ruleset(fixed, "c.yaml")).errors == []


def test_a_default_routing_to_a_role_no_key_can_hold_is_an_error(trials: TrialWorker) -> None:
    text = ruleset(
        "  - {id: a, priority: 1, when: transfer.qty > 2, then: {outcome: approve}}\n",
        extra="default: {outcome: route, approvers: [buyer]}\n",
    )
    (p,) = check_ruleset(trials, parse_ruleset(text, "c.yaml")).errors
    assert (p.path, p.rule_id) == ("default.approvers", None) and "'buyer'" in p.message
