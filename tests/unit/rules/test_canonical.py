"""The canonical form and content hash of a ruleset, and the rule-level diff between versions."""

from __future__ import annotations

from service.rules.language import canonical_json, diff_rulesets, parse_ruleset, ruleset_sha256

BLOCK = """\
ruleset: transfer-approval
kind: transfer
facts:
  transfer.qty: int
  transfer.value: float
rules:
  - id: big
    priority: 10
    when: transfer.qty > 10
    then:
      outcome: reject
      reason: too big
  - id: cheap
    priority: 5
    when: transfer.value < 100
    then: {outcome: approve}
default: {outcome: route}
"""

FLOW = """\
# the same ruleset written another way
kind: "transfer"
ruleset: 'transfer-approval'
rules: [{priority: 10, id: big, then: {reason: too big, outcome: reject}, when: "transfer.qty > 10"},
        {when: transfer.value < 100, then: {outcome: approve}, id: cheap, priority: 5}]
facts: {transfer.value: float, transfer.qty: int}
default:
  outcome: route
"""


def test_the_hash_ignores_key_order_quoting_comments_and_layout() -> None:
    assert ruleset_sha256(parse_ruleset(BLOCK)) == ruleset_sha256(parse_ruleset(FLOW))


def test_the_hash_changes_with_the_content() -> None:
    changed = BLOCK.replace("transfer.qty > 10", "transfer.qty > 11")
    assert ruleset_sha256(parse_ruleset(BLOCK)) != ruleset_sha256(parse_ruleset(changed))


def test_the_canonical_form_is_compact_sorted_json() -> None:
    text = canonical_json(parse_ruleset(BLOCK))
    assert text.startswith('{"default":{"outcome":"route"},"facts":{"transfer.qty":"int"')
    assert " " not in text.replace("too big", "").replace("transfer.qty > 10", "").replace(
        "transfer.value < 100", ""
    )


def test_the_hash_is_sha256_hex() -> None:
    digest = ruleset_sha256(parse_ruleset(BLOCK))
    assert len(digest) == 64 and int(digest, 16) >= 0


NEW = """\
ruleset: transfer-approval
kind: transfer
hit_policy: collect
facts:
  transfer.qty: int
  transfer.value: float
  source.floor: int
rules:
  - id: big
    priority: 20
    when: transfer.qty > 12
    then:
      outcome: reject
      reason: too big
      sla_hours: 2
  - id: floor
    priority: 1
    when: source.floor > 0
    then: {outcome: route}
default: {outcome: route, approvers: [store_manager]}
"""


def test_diff_lists_added_removed_and_changed_rules_field_by_field() -> None:
    diff = diff_rulesets(parse_ruleset(BLOCK), parse_ruleset(NEW))
    assert diff["added"] == ["floor"]
    assert diff["removed"] == ["cheap"]
    assert diff["changed"] == [
        {
            "id": "big",
            "changes": {
                "priority": {"before": 10, "after": 20},
                "when": {"before": "transfer.qty > 10", "after": "transfer.qty > 12"},
                "then.sla_hours": {"before": None, "after": 2},
            },
        }
    ]


def test_diff_reports_default_hit_policy_and_facts() -> None:
    diff = diff_rulesets(parse_ruleset(BLOCK), parse_ruleset(NEW))
    assert diff["settings"] == {
        "hit_policy": {"before": "first", "after": "collect"},
        "default": {
            "before": {"outcome": "route"},
            "after": {"outcome": "route", "approvers": ["store_manager"]},
        },
    }
    assert diff["facts"] == {"source.floor": {"before": None, "after": "int"}}
    assert diff["identical"] is False


def test_a_condition_rewritten_with_the_same_meaning_and_text_is_no_change() -> None:
    diff = diff_rulesets(parse_ruleset(BLOCK), parse_ruleset(FLOW))
    assert (diff["added"], diff["removed"], diff["changed"], diff["settings"]) == ([], [], [], {})
    assert diff["identical"] is True
