"""Every shipped ruleset parses, passes the publishing checks and its embedded tests on both engines."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.rules.language import parse_ruleset
from service.rules.trial import TrialWorker, check_ruleset

RULESETS = Path(__file__).resolve().parents[3] / "rulesets"
FILES = sorted(RULESETS.glob("*/*.yaml"))


def test_there_is_a_shipped_ruleset_for_every_decision_kind() -> None:
    assert {path.parent.name for path in FILES} == {
        "allocation",
        "availability",
        "reorder",
        "transfer",
        "markdown",
    }


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_shipped_ruleset_passes_every_check_and_embedded_test_on_both_engines(
    path: Path, trials: TrialWorker
) -> None:
    ruleset = parse_ruleset(path.read_text(), str(path))
    assert ruleset.kind == path.parent.name
    report = check_ruleset(trials, ruleset)
    assert report.errors == []
    assert report.warnings == []
    assert {t.engine for t in report.tests} == {"durable", "python"}
    failed = [(t.name, t.engine, t.expected, t.actual) for t in report.tests if not t.passed]
    assert failed == []
    assert report.ok
