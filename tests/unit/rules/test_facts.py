"""Checking request facts against the ruleset's declared types."""

from __future__ import annotations

from service.rules.language import fact_problems, parse_ruleset

RULESET = parse_ruleset(
    "ruleset: typed\nkind: transfer\n"
    "facts: {transfer.qty: int, transfer.value: float, source.type: str, same_region: bool}\n"
    "rules:\n  - {id: r, priority: 1, when: transfer.qty > 1, then: {}}\n"
)


def test_facts_of_the_declared_types_have_no_problems() -> None:
    facts = {"transfer": {"qty": 2, "value": 3}, "source": {"type": "dc"}, "same_region": False}
    assert fact_problems(RULESET, facts) == []


def test_missing_facts_are_not_problems() -> None:
    assert fact_problems(RULESET, {}) == []


def test_a_value_of_another_type_is_named_with_its_path() -> None:
    facts = {"transfer": {"qty": "2", "value": True}, "same_region": 1}
    assert fact_problems(RULESET, facts) == [
        "transfer.qty: expected int, found str '2'",
        "transfer.value: expected float, found bool True",
        "same_region: expected bool, found int 1",
    ]
