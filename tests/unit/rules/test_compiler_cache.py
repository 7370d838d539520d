"""What compiling derives from a ruleset is kept on it: the same document compiles once, versions share
it, and it goes when the document goes."""

from __future__ import annotations

import gc
import weakref

from service.rules.language import compile_ruleset, parse_ruleset
from service.rules.language.compiler import compiled_ruleset

DRAFT = """\
ruleset: draft-{name}
kind: transfer
hit_policy: first
facts: {{transfer.qty: int}}
rules:
  - {{id: a, priority: 1, when: transfer.qty > {n}, then: {{sla_hours: 4}}}}
"""


def test_the_same_document_compiles_once_and_versions_share_it() -> None:
    ruleset = parse_ruleset(DRAFT.format(name="same", n=-1))
    first = compile_ruleset(ruleset, "python")
    assert compile_ruleset(ruleset, "python") is first
    third = compile_ruleset(ruleset, "python", version=3)
    assert third.version == 3 and third.compiled is first.compiled
    durable = compile_ruleset(ruleset, "durable")
    assert durable.compiled is first.compiled is compiled_ruleset(ruleset)


def test_another_document_compiles_on_its_own_and_agrees() -> None:
    first = compile_ruleset(parse_ruleset(DRAFT.format(name="twice", n=2)), "python")
    second = compile_ruleset(parse_ruleset(DRAFT.format(name="twice", n=2)), "python")
    assert second is not first and second.compiled.sha256 == first.compiled.sha256
    facts = {"transfer": {"qty": 3}}
    assert first.evaluate(facts).result == second.evaluate(facts).result == {"sla_hours": 4}


def test_what_was_compiled_goes_with_the_document() -> None:
    ruleset = parse_ruleset(DRAFT.format(name="gone", n=1))
    evaluator = weakref.ref(compile_ruleset(ruleset, "python"))
    compiled = weakref.ref(compiled_ruleset(ruleset))
    assert evaluator() is not None and compiled() is not None
    del ruleset
    gc.collect()
    assert evaluator() is None and compiled() is None
