"""Properties of the parser: the canonical text of a condition parses back to the same tree."""

from __future__ import annotations

from hypothesis import given, settings

from service.rules.language.analysis import norm_text, normalize
from service.rules.language.syntax import parse_condition, unparse
from tests.contract.test_engines_agree import condition_text


@settings(max_examples=300, deadline=None)
@given(text=condition_text())
def test_the_canonical_text_parses_back_to_the_same_canonical_text(text: str) -> None:
    canonical = unparse(parse_condition(text))
    assert unparse(parse_condition(canonical)) == canonical


@settings(max_examples=300, deadline=None)
@given(text=condition_text())
def test_the_canonical_text_has_the_same_normal_form(text: str) -> None:
    try:
        expected = norm_text(normalize(parse_condition(text)))
    except ValueError:
        return  # refused comparisons are refused either way
    assert norm_text(normalize(parse_condition(unparse(parse_condition(text))))) == expected
