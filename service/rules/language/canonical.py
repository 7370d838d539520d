"""The canonical form of a ruleset (its content hash) and the rule-level difference between two versions."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from service.rules.language.document import Rule, Ruleset
from service.rules.language.syntax import unparse


def canonical_json(ruleset: Ruleset) -> str:
    """The parsed document as JSON with sorted keys and no whitespace: independent of YAML layout."""
    return json.dumps(ruleset.document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def ruleset_sha256(ruleset: Ruleset) -> str:
    return hashlib.sha256(canonical_json(ruleset).encode("utf-8")).hexdigest()


def _rule_fields(rule: Rule) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "priority": rule.priority,
        "description": rule.description,
        "when": unparse(rule.when),
    }
    for key, value in rule.then.items():
        fields[f"then.{key}"] = value
    return fields


def _changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key in list(before) + [k for k in after if k not in before]:
        old, new = before.get(key), after.get(key)
        if json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True):
            out[key] = {"before": old, "after": new}
    return out


def diff_rulesets(old: Ruleset, new: Ruleset) -> dict[str, Any]:
    """Rules added, removed and changed (field by field), and changes to the ruleset's own settings.

    Conditions are compared by their canonical text, so re-wrapping or re-quoting a condition is no change.
    """
    old_rules = {r.id: r for r in old.rules}
    new_rules = {r.id: r for r in new.rules}
    changed = []
    for rule_id, rule in new_rules.items():
        if rule_id in old_rules:
            fields = _changes(_rule_fields(old_rules[rule_id]), _rule_fields(rule))
            if fields:
                changed.append({"id": rule_id, "changes": fields})
    settings = _changes(
        {
            "kind": old.kind,
            "description": old.description,
            "hit_policy": old.hit_policy,
            "default": old.default,
        },
        {
            "kind": new.kind,
            "description": new.description,
            "hit_policy": new.hit_policy,
            "default": new.default,
        },
    )
    facts = _changes(dict(old.facts), dict(new.facts))
    old_tests = {t.name for t in old.tests}
    new_tests = {t.name for t in new.tests}
    return {
        "name": {"before": old.name, "after": new.name} if old.name != new.name else None,
        "added": [r.id for r in new.rules if r.id not in old_rules],
        "removed": [r.id for r in old.rules if r.id not in new_rules],
        "changed": changed,
        "settings": settings,
        "facts": facts,
        "tests": {
            "added": sorted(new_tests - old_tests),
            "removed": sorted(old_tests - new_tests),
        },
        "identical": canonical_json(old) == canonical_json(new),
    }
