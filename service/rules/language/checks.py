"""`check_ruleset`: everything publishing requires, gathered in one report.

Static checks (schema was checked by the parser; here types, catalogue, warnings), durable_rules' limits,
and the embedded tests on both engines. The embedded tests and the durable_rules compile run in a child
process with a time limit, so that a ruleset that would hang durable_rules, or tests that would take
long, can never hold the server; `dry_run` evaluates a stored version on given facts in the same child,
under its own time limit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from service.rules.analysis import analyse
from service.rules.document import Ruleset, RulesetTest, parse_ruleset
from service.rules.evaluation import Evaluation, Evaluator, TraceLevel
from service.rules.limits import limit_problems
from service.rules.problems import Problem, RuleEvaluationError, RulesetError
from service.rules.trial import TrialWorker

CHILD_TIMEOUT_SECONDS = 10.0
DRY_RUN_SECONDS = 5.0


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


_worker: TrialWorker | None = None


def _trial_worker() -> TrialWorker:
    global _worker
    if _worker is None:
        _worker = TrialWorker()
    return _worker


def durable_trial(ruleset: Ruleset, timeout: float = CHILD_TIMEOUT_SECONDS) -> tuple[str, Any]:
    """("ok", test results) or ("error", reason) from running the embedded tests on the Python engine
    and loading the ruleset into durable_rules to run them again, in the trial child process (see
    `service.rules.trial`), which is killed if it takes over `timeout` seconds.
    """
    return _trial_worker().trial(ruleset.text, ruleset.source, timeout)


def dry_run(
    text: str,
    source: str,
    facts: dict[str, Any],
    trace: TraceLevel,
    engine: str,
    version: int,
    timeout: float = DRY_RUN_SECONDS,
) -> Evaluation:
    """Evaluate the ruleset `text` on `facts` in the trial child process, killed after `timeout` seconds.

    Blocking: call it from a thread. Raises `RulesetError` when the text is not a valid ruleset, and
    `RuleEvaluationError` when the facts cannot be evaluated or the evaluation takes too long.
    """
    request = {
        "text": text,
        "source": source,
        "facts": facts,
        "trace": trace,
        "engine": engine,
        "version": version,
    }
    status, payload = _trial_worker().ask(request, timeout)
    if status == "ok":
        return Evaluation(**payload)
    if status == "invalid":
        raise RulesetError([Problem(**p) for p in payload])
    if status == "refused":
        raise RuleEvaluationError(payload["message"], payload["rule_id"], payload["path"])
    if status == "timeout":
        raise RuleEvaluationError(
            f"the dry run did not finish within {timeout:g} s, the time limit of a dry run"
        )
    raise RuntimeError(f"the dry run failed: {payload}")


def check_ruleset(ruleset: Ruleset, *, durable_timeout: float = CHILD_TIMEOUT_SECONDS) -> ValidationReport:
    """Every check publishing requires; the report is `ok` only when nothing is wrong."""
    report = ValidationReport()
    analysis = analyse(ruleset)
    report.errors.extend(analysis.errors)
    report.warnings.extend(analysis.warnings)
    if report.errors:
        return report
    report.errors.extend(limit_problems(ruleset, analysis.normal))
    if report.errors:
        return report
    status, payload = durable_trial(ruleset, durable_timeout)
    if status == "ok":
        report.tests.extend(TestResult(**r) for r in payload)
    else:
        line, column = ruleset.position("rules", False)
        report.errors.append(Problem(ruleset.source, line, column, None, "rules", str(payload)))
    return report


def check_text(text: str, source: str = "<string>") -> tuple[Ruleset | None, ValidationReport]:
    """Parse and check in one step: the ruleset (None if it does not parse) and the report, whose errors
    then hold the parse problems."""
    try:
        ruleset = parse_ruleset(text, source)
    except RulesetError as exc:
        return None, ValidationReport(errors=list(exc.problems))
    return ruleset, check_ruleset(ruleset)
