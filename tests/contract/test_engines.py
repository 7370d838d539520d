"""One conformance suite for both rule engines: every test runs against durable_rules and the Python engine."""

from __future__ import annotations

import threading
from collections.abc import Callable
from textwrap import dedent
from typing import Any

import pytest

from service.rules.language import Evaluator, RuleEvaluationError, compile_ruleset, parse_ruleset
from service.rules.language.durable_engine import DurableEvaluator

HEADER = """\
ruleset: conformance
kind: transfer
hit_policy: {policy}
facts:
  transfer.qty: int
  transfer.value: float
  transfer.reason: str
  source.available: int
  source.floor: int
  source.open_promotions: int
  source.type: str
  destination.available: int
  same_region: bool
  requested_by.role: str
"""

Build = Callable[..., Evaluator]


@pytest.fixture(params=["durable", "python"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def build(engine: str) -> Build:
    """Compile a ruleset from its rules (and default) for the engine under test."""

    def make(
        rules: str, *, policy: str = "first", default: str | None = None, name: str = "conformance"
    ) -> Evaluator:
        text = HEADER.format(policy=policy).replace("conformance", name) + "rules:\n" + dedent(rules)
        if default is not None:
            text += f"default: {default}\n"
        evaluator = compile_ruleset(parse_ruleset(text, "conformance.yaml"), engine)  # type: ignore[arg-type]
        if isinstance(evaluator, DurableEvaluator):
            evaluator.fallback = False
        return evaluator

    return make


FACTS: dict[str, Any] = {
    "transfer": {"qty": 4, "value": 250.0, "reason": "rebalance"},
    "source": {"available": 10, "floor": 3, "open_promotions": 0, "type": "store"},
    "destination": {"available": 1},
    "same_region": True,
    "requested_by": {"role": "store_associate"},
}


def test_first_hit_takes_the_highest_priority_match(build: Build) -> None:
    ev = build("""\
        - {id: low, priority: 1, when: transfer.qty > 0, then: {outcome: approve}}
        - {id: high, priority: 9, when: transfer.qty > 1, then: {outcome: reject}}
        - {id: never, priority: 50, when: transfer.qty > 100, then: {outcome: route}}
        """)
    out = ev.evaluate(FACTS)
    assert (out.matched, out.result) == (["high"], {"outcome": "reject"})


def test_first_hit_breaks_priority_ties_by_declaration_order(build: Build) -> None:
    ev = build("""\
        - {id: second-declared, priority: 5, when: transfer.qty > 0, then: {outcome: approve}}
        - {id: first-declared, priority: 5, when: transfer.qty > 1, then: {outcome: reject}}
        """)
    assert ev.evaluate(FACTS).matched == ["second-declared"]


def test_collect_merges_every_match_with_higher_priority_winning_per_key(build: Build) -> None:
    ev = build(
        """\
        - {id: base, priority: 1, when: transfer.qty > 0, then: {outcome: approve, sla_hours: 48, reason: base}}
        - {id: promo, priority: 7, when: source.open_promotions == 0, then: {sla_hours: 4}}
        - {id: top, priority: 9, when: same_region, then: {reason: same region}}
        """,
        policy="collect",
    )
    out = ev.evaluate(FACTS)
    assert out.matched == ["top", "promo", "base"]
    assert out.result == {"reason": "same region", "sla_hours": 4, "outcome": "approve"}


def test_collect_lists_a_rule_once_even_when_several_or_branches_hold(build: Build) -> None:
    ev = build(
        """\
        - {id: either, priority: 1, when: transfer.qty > 0 or source.available > 0, then: {outcome: route}}
        """,
        policy="collect",
    )
    assert ev.evaluate(FACTS).matched == ["either"]


def test_nothing_matched_gives_the_default(build: Build) -> None:
    ev = build(
        "- {id: big, priority: 1, when: transfer.qty > 100, then: {outcome: reject}}\n",
        default="{outcome: route, approvers: [store_manager]}",
    )
    out = ev.evaluate(FACTS)
    assert (out.matched, out.used_default) == ([], True)
    assert out.result == {"outcome": "route", "approvers": ["store_manager"]}


def test_nothing_matched_without_a_default_gives_an_empty_result(build: Build) -> None:
    ev = build("- {id: big, priority: 1, when: transfer.qty > 100, then: {outcome: reject}}\n")
    out = ev.evaluate(FACTS)
    assert (out.result, out.matched, out.used_default) == ({}, [], False)


@pytest.mark.parametrize(
    "condition",
    [
        "transfer.qty != 3",
        "not (transfer.qty == 3)",
        "transfer.qty not in [1, 2]",
        "not (transfer.qty > 1000)",
        "transfer.qty < source.floor + 100",
        "source.floor < transfer.qty + 100",
    ],
)
def test_a_missing_fact_never_matches(build: Build, condition: str) -> None:
    ev = build(f"- {{id: r, priority: 1, when: '{condition}', then: {{outcome: approve}}}}\n")
    facts = {"transfer": {"value": 1.0}, "source": {"available": 3}}
    assert ev.evaluate(facts).matched == []


def test_a_missing_fact_does_not_stop_another_or_branch(build: Build) -> None:
    ev = build(
        "- {id: r, priority: 1, when: transfer.qty > 1 or source.floor > 1, then: {outcome: approve}}\n"
    )
    assert ev.evaluate({"source": {"floor": 3}}).matched == ["r"]


def test_in_list_matches_any_item(build: Build) -> None:
    ev = build("""\
        - {id: r, priority: 1, when: 'source.type in ["dc", "store"]', then: {outcome: approve}}
        """)
    assert ev.evaluate(FACTS).matched == ["r"]
    assert ev.evaluate({**FACTS, "source": {"type": "dark_store"}}).matched == []


def test_not_in_list_matches_no_item(build: Build) -> None:
    ev = build("""\
        - {id: r, priority: 1, when: 'source.type not in ["dc", "dark_store"]', then: {outcome: approve}}
        """)
    assert ev.evaluate(FACTS).matched == ["r"]
    assert ev.evaluate({**FACTS, "source": {"type": "dc"}}).matched == []


def test_arithmetic_between_fields(build: Build) -> None:
    ev = build("""\
        - {id: r, priority: 1, when: source.available - transfer.qty < source.floor * 3, then: {outcome: reject}}
        """)
    assert ev.evaluate(FACTS).matched == ["r"]  # 6 < 9
    assert ev.evaluate({**FACTS, "source": {**FACTS["source"], "floor": 1}}).matched == []  # 6 < 3


def test_division_by_a_number_is_true_division(build: Build) -> None:
    ev = build("- {id: r, priority: 1, when: transfer.qty / 8 > 0.4, then: {outcome: approve}}\n")
    assert ev.evaluate(FACTS).matched == ["r"]  # 4 / 8 = 0.5, not 0


def test_all_any_not_blocks_nest(build: Build) -> None:
    ev = build("""\
        - id: r
          priority: 1
          when:
            all:
              - transfer.value <= 500
              - any: [source.type == "dc", same_region]
              - not: {any: [source.open_promotions > 0, requested_by.role == "intern"]}
          then: {outcome: approve}
        """)
    assert ev.evaluate(FACTS).matched == ["r"]
    assert ev.evaluate({**FACTS, "requested_by": {"role": "intern"}}).matched == []


def test_a_bare_boolean_field_is_a_condition(build: Build) -> None:
    ev = build("""\
        - {id: same, priority: 2, when: same_region, then: {outcome: approve}}
        - {id: other, priority: 1, when: not same_region, then: {outcome: route}}
        """)
    assert ev.evaluate(FACTS).matched == ["same"]
    assert ev.evaluate({**FACTS, "same_region": False}).matched == ["other"]


def test_an_always_true_rule_catches_everything(build: Build) -> None:
    ev = build("- {id: always, priority: 0, when: true, then: {outcome: route}}\n")
    assert ev.evaluate({}).matched == ["always"]


def test_computed_values_are_evaluated_after_the_match(build: Build) -> None:
    ev = build("""\
        - id: r
          priority: 1
          when: transfer.qty > 0
          then:
            sla_hours: "= max(1, ceil(transfer.value / 100) + source.floor)"
            reason: computed
        """)
    assert ev.evaluate(FACTS).result == {"sla_hours": 6, "reason": "computed"}


def test_a_computed_value_reading_a_missing_field_is_an_error(build: Build) -> None:
    ev = build('- {id: r, priority: 1, when: source.floor > 0, then: {sla_hours: "= transfer.qty + 1"}}\n')
    with pytest.raises(RuleEvaluationError, match="sla_hours"):
        ev.evaluate({"source": {"floor": 1}})


def test_floats_written_with_exponents_are_compared_exactly(build: Build) -> None:
    ev = build("""\
        - {id: tiny, priority: 2, when: transfer.value < 0.001, then: {outcome: approve}}
        - {id: huge, priority: 1, when: transfer.value > 1000000000, then: {outcome: reject}}
        """)
    assert ev.evaluate({"transfer": {"value": 1e-7}}).matched == ["tiny"]
    assert ev.evaluate({"transfer": {"value": 1e20}}).matched == ["huge"]


def test_strings_with_quotes_and_unicode_compare_equal(build: Build) -> None:
    ev = build("""\
        - {id: r, priority: 1, when: 'transfer.reason == "caf\u00e9 \\"north\\""', then: {outcome: approve}}
        """)
    assert ev.evaluate({"transfer": {"reason": 'caf\u00e9 "north"'}}).matched == ["r"]


def test_trace_none_has_no_trace(build: Build) -> None:
    ev = build("- {id: r, priority: 1, when: transfer.qty > 0, then: {outcome: approve}}\n")
    assert ev.evaluate(FACTS, trace="none").trace is None


def test_trace_rules_lists_matched_rules_with_the_fields_they_read_and_what_they_set(build: Build) -> None:
    ev = build(
        """\
        - {id: a, priority: 2, when: transfer.qty > source.floor, then: {outcome: approve}}
        - {id: b, priority: 1, when: 'source.type in ["store"]', then: {sla_hours: 4}}
        """,
        policy="collect",
    )
    trace = ev.evaluate(FACTS, trace="rules").trace
    assert trace is not None
    assert trace["matched"] == [
        {
            "rule": "a",
            "priority": 2,
            "fields": {"transfer.qty": 4, "source.floor": 3},
            "set": {"outcome": "approve"},
        },
        {"rule": "b", "priority": 1, "fields": {"source.type": "store"}, "set": {"sla_hours": 4}},
    ]
    assert "rules" not in trace


def test_trace_full_gives_every_condition_with_its_truth_and_operands(build: Build) -> None:
    ev = build(
        """\
        - {id: a, priority: 2, when: transfer.qty > 10 and source.floor == 3, then: {outcome: reject}}
        - {id: b, priority: 1, when: destination.available < 0, then: {outcome: approve}}
        """,
        default="{outcome: route}",
    )
    trace = ev.evaluate(FACTS, trace="full").trace
    assert trace is not None
    assert trace["used_default"] is True
    assert trace["default"] == {"outcome": "route"}
    rule_a = trace["rules"][0]
    assert rule_a["rule"] == "a" and rule_a["matched"] is False
    assert rule_a["conditions"] == [
        {"condition": "transfer.qty > 10", "result": False, "left": 4, "right": 10},
        {"condition": "source.floor == 3", "result": True, "left": 3, "right": 3},
    ]


def test_trace_full_marks_conditions_on_missing_fields(build: Build) -> None:
    ev = build("- {id: a, priority: 1, when: transfer.qty != 1, then: {outcome: reject}}\n")
    trace = ev.evaluate({}, trace="full").trace
    assert trace is not None
    assert trace["rules"][0]["conditions"] == [
        {"condition": "transfer.qty != 1", "result": False, "left": None, "right": 1, "missing": True}
    ]


def test_the_evaluation_record_names_ruleset_version_engine_and_time(build: Build, engine: str) -> None:
    ev = build("- {id: a, priority: 1, when: transfer.qty > 0, then: {outcome: approve}}\n", name="recorded")
    out = compile_ruleset(ev.compiled.ruleset, engine, version=7).evaluate(FACTS)  # type: ignore[arg-type]
    assert out.ruleset == {"name": "recorded", "version": 7, "sha256": ev.compiled.sha256}
    assert out.engine == engine
    assert out.elapsed_us > 0


def test_compiling_the_same_document_twice_reuses_the_compiled_rules(build: Build, engine: str) -> None:
    first = build("- {id: a, priority: 1, when: transfer.qty > 0, then: {outcome: approve}}\n", name="cached")
    again = compile_ruleset(first.compiled.ruleset, engine, version=2)  # type: ignore[arg-type]
    assert again.compiled is first.compiled and again.version == 2
    other = build("- {id: a, priority: 1, when: transfer.qty > 0, then: {outcome: approve}}\n", name="cached")
    assert other.compiled.sha256 == first.compiled.sha256


def test_evaluations_from_many_threads_agree(build: Build) -> None:
    ev = build(
        """\
        - {id: a, priority: 2, when: transfer.qty > 5, then: {outcome: reject}}
        - {id: b, priority: 1, when: transfer.qty > 2, then: {outcome: route}}
        """,
        policy="collect",
    )
    wrong: list[object] = []

    def work(qty: int) -> None:
        want = ["a", "b"] if qty > 5 else ["b"] if qty > 2 else []
        for _ in range(300):
            got = ev.evaluate({"transfer": {"qty": qty}}).matched
            if got != want:
                wrong.append((qty, got))

    threads = [threading.Thread(target=work, args=(q,)) for q in (1, 4, 8, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_a_null_value_matches_only_equality_with_null(build: Build) -> None:
    ev = build(
        """\
        - {id: is-null, priority: 4, when: source.type == null, then: {sla_hours: 1}}
        - {id: not-null, priority: 3, when: source.type != null, then: {sla_hours: 2}}
        - {id: not-dc, priority: 2, when: source.type != "dc", then: {sla_hours: 3}}
        - {id: below, priority: 1, when: transfer.qty < 3, then: {sla_hours: 4}}
        """,
        policy="collect",
    )
    assert ev.evaluate({"source": {"type": None}, "transfer": {"qty": None}}).matched == ["is-null"]
    assert ev.evaluate({"source": {"type": "store"}}).matched == ["not-null", "not-dc"]


def test_a_large_keyed_ruleset_keeps_priority_order_across_keys(build: Build) -> None:
    keyed = "".join(
        f"- {{id: k{i}, priority: {i}, when: 'source.type == \"{['dc', 'store'][i % 2]}\" and transfer.qty > {i % 5}',"
        f" then: {{sla_hours: {i + 1}}}}}\n"
        for i in range(20)
    )
    unkeyed = "- {id: open, priority: 10, when: transfer.qty > 0, then: {sla_hours: 99, reason: open}}\n"
    first = build(keyed + unkeyed, name="keyed-first")
    collect = build(keyed + unkeyed, policy="collect", name="keyed-collect")
    facts = {"source": {"type": "store"}, "transfer": {"qty": 3}}
    assert first.evaluate(facts).matched == ["k17"]
    assert collect.evaluate(facts).matched == ["k17", "k15", "k11", "open", "k7", "k5", "k1"]
    assert first.evaluate({"source": {"type": "outlet"}, "transfer": {"qty": 3}}).matched == ["open"]


def test_an_unknown_trace_level_is_refused(build: Build) -> None:
    ev = build("- {id: a, priority: 1, when: transfer.qty > 0, then: {outcome: approve}}\n")
    with pytest.raises(ValueError, match="unknown trace level"):
        ev.evaluate(FACTS, trace="verbose")  # type: ignore[arg-type]


def test_facts_may_be_any_mapping(build: Build) -> None:
    from types import MappingProxyType

    ev = build(
        "- {id: a, priority: 1, when: 'transfer.qty > 1 and source.type == \"store\"', then: {outcome: approve}}\n"
    )
    facts = MappingProxyType({"transfer": MappingProxyType({"qty": 2}), "source": {"type": "store"}})
    assert ev.evaluate(facts).matched == ["a"]
