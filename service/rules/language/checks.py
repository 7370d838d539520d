"""The report publishing requires, and the parts of it that need no engine process.

`static_report` gathers the static checks (schema was checked by the parser; here types, catalogue,
warnings) and durable_rules' limits; `run_test` runs one embedded test on one evaluator. Running the
embedded tests on both engines happens in a child process (`service.rules.trial.check_ruleset`), so that
a ruleset that would hang durable_rules can never hold the server.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from service.rules.language.analysis import analyse
from service.rules.language.document import Ruleset, RulesetTest
from service.rules.language.evaluation import Evaluator
from service.rules.language.limits import limit_problems
from service.rules.language.problems import Problem, RuleEvaluationError


@dataclass(slots=True)
class TestResult:
    name: str
    passed: bool
    engine: str
    expected: dict[str, Any]
    actual: dict[str, Any]
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class ValidationReport:
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    tests: list[TestResult] = field(default_factory=list)

    @property
    def tests_passed(self) -> bool:
        return all(t.passed for t in self.tests)

    @property
    def ok(self) -> bool:
        """No errors and every embedded test passed on both engines."""
        return not self.errors and self.tests_passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": [p.to_dict() for p in self.errors],
            "warnings": [p.to_dict() for p in self.warnings],
            "tests": [t.to_dict() for t in self.tests],
        }


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, float) or isinstance(actual, float):
        if isinstance(expected, int | float) and isinstance(actual, int | float):
            if isinstance(expected, bool) or isinstance(actual, bool):
                return expected is actual
            return math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-12)
        return False
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    return bool(expected == actual)


def run_test(evaluator: Evaluator, test: RulesetTest) -> TestResult:
    """Evaluate one embedded test; it passes when every expected key (and `rules`, if given) agrees."""
    expected = dict(test.expect)
    try:
        evaluation = evaluator.evaluate(test.given, trace="none")
    except RuleEvaluationError as exc:
        return TestResult(test.name, False, evaluator.engine, expected, {}, str(exc))
    actual: dict[str, Any] = {}
    wrong: list[str] = []
    for key, want in expected.items():
        if key == "rules":
            actual["rules"] = evaluation.matched
            if list(want) != evaluation.matched:
                wrong.append(f"rules matched {evaluation.matched}, expected {want}")
        elif key == "used_default":
            actual[key] = evaluation.used_default
            if want is not evaluation.used_default:
                wrong.append(f"used_default is {evaluation.used_default}")
        else:
            got = evaluation.result.get(key)
            actual[key] = got
            if key not in evaluation.result:
                wrong.append(f"'{key}' was not set")
            elif not _same(want, got):
                wrong.append(f"'{key}' is {got!r}, expected {want!r}")
    message = "; ".join(wrong) if wrong else None
    return TestResult(test.name, not wrong, evaluator.engine, expected, actual, message)


def static_report(ruleset: Ruleset) -> ValidationReport:
    """The checks that need no engine: types, catalogue and warnings, then durable_rules' limits (only
    when the first found no error). `ok` here means only that the embedded tests may be run next."""
    report = ValidationReport()
    analysis = analyse(ruleset)
    report.errors.extend(analysis.errors)
    report.warnings.extend(analysis.warnings)
    if not report.errors:
        report.errors.extend(limit_problems(ruleset, analysis.normal))
    return report
