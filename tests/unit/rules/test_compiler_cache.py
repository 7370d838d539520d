"""The compiler's caches: the same content compiles once; Python evaluators and compiled forms, which every
validated draft creates, stay within a bound."""

from __future__ import annotations

from service.rules.language import compile_ruleset, compiler, parse_ruleset

DRAFT = """\
ruleset: draft-{name}
kind: transfer
hit_policy: first
facts: {{transfer.qty: int}}
rules:
  - {{id: a, priority: 1, when: transfer.qty > {n}, then: {{sla_hours: 4}}}}
"""


def test_the_same_content_compiles_once_and_versions_share_it() -> None:
    ruleset = parse_ruleset(DRAFT.format(name="same", n=-1))
    first = compile_ruleset(ruleset, "python")
    assert compile_ruleset(parse_ruleset(DRAFT.format(name="same", n=-1)), "python") is first
    third = compile_ruleset(ruleset, "python", version=3)
    assert third.version == 3 and third.compiled is first.compiled


def test_python_evaluators_and_compiled_forms_stay_within_the_bound() -> None:
    for n in range(compiler.CACHE_ENTRIES + 40):
        evaluator = compile_ruleset(parse_ruleset(DRAFT.format(name=n, n=n)), "python")
        assert evaluator.evaluate({"transfer": {"qty": n + 1}}).result["sla_hours"] == 4
    assert len(compiler._python) == compiler.CACHE_ENTRIES
    assert len(compiler._compiled) <= compiler.CACHE_ENTRIES
    # the most recent ones are the ones kept
    assert (
        compile_ruleset(
            parse_ruleset(DRAFT.format(name=compiler.CACHE_ENTRIES + 39, n=compiler.CACHE_ENTRIES + 39)),
            "python",
        )
        is (compiler._python[next(reversed(compiler._python))])
    )
