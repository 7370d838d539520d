"""Every example in docs/rulesets.md is checked: accepted ones pass all checks and tests, refused ones fail."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.rules.language import RulesetError, parse_ruleset
from service.rules.trial import TrialWorker, check_ruleset

DOC = Path(__file__).resolve().parents[3] / "docs" / "rulesets.md"
BLOCKS = re.findall(r"^```(yaml(?: refused)?)\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)
ACCEPTED = [text for kind, text in BLOCKS if kind == "yaml"]
REFUSED = [text for kind, text in BLOCKS if kind == "yaml refused"]


def test_the_reference_has_examples_of_both_sorts() -> None:
    assert len(ACCEPTED) >= 4 and len(REFUSED) >= 4


@pytest.mark.parametrize("text", ACCEPTED, ids=[re.search(r"ruleset: (\S+)", t).group(1) for t in ACCEPTED])  # type: ignore[union-attr]
def test_an_accepted_example_passes_every_check_and_its_tests_on_both_engines(
    text: str, trials: TrialWorker
) -> None:
    report = check_ruleset(trials, parse_ruleset(text, "docs/rulesets.md"))
    assert report.errors == [] and report.warnings == []
    assert report.tests and all(t.passed for t in report.tests), [t for t in report.tests if not t.passed]
    assert {t.engine for t in report.tests} == {"durable", "python"}


@pytest.mark.parametrize("text", REFUSED, ids=[re.search(r"ruleset: (\S+)", t).group(1) for t in REFUSED])  # type: ignore[union-attr]
def test_a_refused_example_is_refused_with_the_quoted_error(text: str, trials: TrialWorker) -> None:
    expected = text.splitlines()[0].removeprefix("# error: ")
    try:
        problems = check_ruleset(trials, parse_ruleset(text, "docs/rulesets.md")).errors
    except RulesetError as exc:
        problems = exc.problems
    assert any(expected in p.message for p in problems), problems
