"""An active ruleset whose declared facts take few values answers the same facts again from the evaluation
it kept; one that reads a float fact, the full trace and the shadow version are always evaluated."""

from __future__ import annotations

from service.decisions.rules import FileRulesets
from service.rules.language import compile_ruleset, parse_ruleset
from service.rules.registry import ActiveRuleset, CompiledVersion
from service.rules.reuse import LIMIT

COUNTED = """\
ruleset: reuse-{name}
kind: allocation
hit_policy: first
facts: {{order.{field}: {kind}, order.channel: str}}
rules:
  - {{id: big, priority: 2, when: order.{field} > 5, then: {{max_splits: 4}}}}
  - {{id: lane, priority: 1, when: order.channel == "web", then: {{max_splits: 8}}}}
"""


def view(kind: str = "int", name: str = "a") -> FileRulesets:
    field = "units" if kind == "int" else "value"
    return FileRulesets.of([(parse_ruleset(COUNTED.format(name=name, kind=kind, field=field)), 2)])


def order(qty: object, channel: object, field: str = "units") -> dict[str, object]:
    return {"order": {field: qty, "channel": channel}}


def test_the_same_fact_values_reuse_the_kept_evaluation() -> None:
    ruleset = view().active("allocation")
    assert ruleset is not None
    facts = order(7, "web")
    first = ruleset.evaluate(facts, "rules")
    again = ruleset.evaluate(order(7, "web"), "rules")
    assert again.evaluation.result == first.evaluation.result == {"max_splits": 4}
    assert again.evaluation.trace is first.evaluation.trace and again.evaluation.elapsed_us == 0.0
    assert again.ruleset_ref() == {"name": "reuse-a", "version": 2, "sha256": ruleset.sha256}
    other = ruleset.evaluate(order(3, "web"), "rules")
    assert (
        other.evaluation.result == {"max_splits": 8} and other.evaluation.trace is not first.evaluation.trace
    )
    none = ruleset.evaluate(facts, "none")
    assert none.evaluation.trace is None and none.evaluation.result == {"max_splits": 4}
    assert len(ruleset.reuse) == 3


def test_a_policy_derived_from_a_kept_result_is_worked_out_once() -> None:
    ruleset = view(name="derived").active("allocation")
    assert ruleset is not None
    made: list[dict[str, object]] = []

    def policy(result: dict[str, object]) -> tuple[object, ...]:
        made.append(result)
        return tuple(sorted(result.items()))

    first = ruleset.evaluate(order(7, "web"), "none").evaluation.derive(policy)
    again = ruleset.evaluate(order(7, "web"), "none").evaluation.derive(policy)
    other = ruleset.evaluate(order(3, "web"), "none").evaluation.derive(policy)
    assert again is first and first == (("max_splits", 4),) and other == (("max_splits", 8),)
    assert made == [{"max_splits": 4}, {"max_splits": 8}]
    # the full trace is evaluated each time: so is what derives from it
    ruleset.evaluate(order(7, "web"), "full").evaluation.derive(policy)
    assert len(made) == 3


def test_true_and_one_are_different_fact_values() -> None:
    ruleset = view(name="bool").active("allocation")
    assert ruleset is not None
    ruleset.evaluate(order(1, "store"), "none")
    ruleset.evaluate(order(True, "store"), "none")
    assert len(ruleset.reuse) == 2


def test_full_trace_float_facts_and_unhashable_values_are_evaluated_each_time() -> None:
    ruleset = view().active("allocation")
    assert ruleset is not None
    facts = order(7, "web")
    full = [ruleset.evaluate(facts, "full") for _ in range(2)]
    assert full[0].evaluation.trace is not full[1].evaluation.trace and len(ruleset.reuse) == 0
    assert ruleset.evaluate(order(7, {"x": 1}), "rules").evaluation.result
    assert len(ruleset.reuse) == 0
    floats = view("float", "float").active("allocation")
    assert floats is not None and not floats.reuse.reusable
    first, again = (floats.evaluate(order(7.5, "web", "value"), "rules") for _ in range(2))
    assert again.evaluation.trace is not first.evaluation.trace and again.evaluation.elapsed_us > 0


def test_at_most_limit_evaluations_are_kept() -> None:
    ruleset = view(name="limit").active("allocation")
    assert ruleset is not None
    for qty in range(LIMIT + 10):
        ruleset.evaluate(order(qty, "store"), "none")
    assert len(ruleset.reuse) == LIMIT
    past = ruleset.evaluate(order(LIMIT + 5, "store"), "none")
    assert past.evaluation.result == {"max_splits": 4} and past.evaluation.elapsed_us > 0


def test_the_shadow_version_is_evaluated_each_time() -> None:
    def version(name: str, number: int) -> CompiledVersion:
        ruleset = parse_ruleset(
            COUNTED.format(name="shadow", kind="int", field="units").replace("> 5", f"> {name}")
        )
        return CompiledVersion("reuse-shadow", "allocation", number, "x", compile_ruleset(ruleset, "python"))

    active, shadow = version("5", 1), version("9", 2)
    ruleset = ActiveRuleset("reuse-shadow", "allocation", 1, "x", "python", active, shadow)
    facts = order(7, "store")
    for _ in range(2):
        evaluated = ruleset.evaluate(facts, "none")
        comparison = ruleset.shadow_evaluate(facts, evaluated)
        assert comparison is not None and comparison.differences
    assert len(active.reuse) == 1 and len(shadow.reuse) == 0
