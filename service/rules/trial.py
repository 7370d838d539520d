"""`check_ruleset`: everything publishing requires, gathered in one report; and dry runs. Both run in a
child process.

`check_ruleset` adds to the static checks (`service.rules.language.static_report`) and the approver
roles' check (`service.rules.roles`) the embedded tests on both engines; those and the durable_rules
compile run in a child process with a time limit, so that a ruleset that would hang durable_rules, or
tests that would take long, can never hold the server;
`dry_run` evaluates a stored version on given facts in the same child, under its own time limit.

`check_ruleset` and `dry_run` run in the child of the `TrialWorker` they are given: the app holds one for
its life (`Services.trials`), a CLI command one for its run. The child reads one JSON request per line on
stdin and answers one line. {"text", "source"} loads the ruleset and runs its
embedded tests on the Python engine, then on durable_rules: ["ok", [test results]] or ["error", reason]. {"text", "source", "facts", "trace", "engine", "version"}
evaluates the facts: ["ok", evaluation], ["invalid", [problems]], ["refused", {message, rule_id, path}]
or ["error", reason]. Whatever hangs or takes too long (a ruleset that hangs durable_rules, see the engine
notes) only holds the child, which is killed after a time limit and replaced; the child is also replaced
every `MAX_TRIALS` requests, which bounds what it keeps. The child answers the embedded tests of a text it
has tested before from what it found then.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from service.rules.language import (
    Evaluation,
    Problem,
    RuleEvaluationError,
    Ruleset,
    RulesetError,
    TestResult,
    TraceLevel,
    ValidationReport,
    compile_ruleset,
    parse_ruleset,
    run_test,
    static_report,
)
from service.rules.language.durable_engine import DurableEvaluator
from service.rules.roles import approver_role_problems

MAX_TRIALS = 200
CHILD_TIMEOUT_SECONDS = 10.0
DRY_RUN_SECONDS = 5.0


def _evaluate(request: dict[str, Any]) -> list[object]:
    try:
        ruleset = parse_ruleset(request["text"], request["source"])
        evaluator = compile_ruleset(ruleset, request["engine"], version=request["version"])
        return ["ok", evaluator.evaluate(request["facts"], request["trace"]).to_dict()]
    except RulesetError as exc:
        return ["invalid", [p.to_dict() for p in exc.problems]]
    except RuleEvaluationError as exc:
        return ["refused", {"message": str(exc), "rule_id": exc.rule_id, "path": exc.path}]
    except Exception as exc:
        return ["error", f"{type(exc).__name__}: {exc}"]


def _answer(request: dict[str, Any]) -> list[object]:
    if "facts" in request:
        return _evaluate(request)
    try:
        ruleset = parse_ruleset(request["text"], request["source"])
        python = compile_ruleset(ruleset, "python")
        durable = compile_ruleset(ruleset, "durable")
        assert isinstance(durable, DurableEvaluator)
        durable.fallback = False
        return ["ok", [run_test(e, t).to_dict() for e in (python, durable) for t in ruleset.tests]]
    except Exception as exc:
        return ["error", f"{type(exc).__name__}: {exc}"]


def main() -> None:
    # The embedded tests of the same text give the same results: the child answers them again from here
    # (every worker seeding the shipped files asks for the same ones). Dry runs are always evaluated.
    tested: dict[str, str] = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        answer = tested.get(line) if "facts" not in request else None
        if answer is None:
            answer = json.dumps(_answer(request))
            if "facts" not in request and answer.startswith('["ok"'):
                tested[line] = answer
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()


class TrialWorker:
    """A long-lived trial child, started at the first request; thread-safe; restarted after a timeout or a
    crash. Its owner closes it (`close`, or `with TrialWorker() as trials:`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._trials = 0

    def _start(self) -> subprocess.Popen[str]:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = package_root + os.pathsep + env.get("PYTHONPATH", "")
        self._trials = 0
        return subprocess.Popen(
            [sys.executable, "-m", "service.rules.trial"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def trial(self, text: str, source: str, timeout: float) -> tuple[str, Any]:
        """Run the embedded tests on both engines: ("ok", results) or ("error", reason)."""
        status, payload = self.ask({"text": text, "source": source}, timeout)
        if status == "timeout":
            return "error", f"the engines did not load and test the ruleset within {timeout:g} s"
        return status, payload

    def ask(self, request: dict[str, Any], timeout: float) -> tuple[str, Any]:
        """The child's answer to one request, or ("timeout", None) once it took over `timeout` seconds
        (the child is then killed), or ("error", reason) when it failed."""
        with self._lock:
            if self._process is None or self._process.poll() is not None or self._trials >= MAX_TRIALS:
                self._stop()
                self._process = self._start()
            process = self._process
            assert process.stdin is not None and process.stdout is not None
            self._trials += 1
            try:
                process.stdin.write(json.dumps(request) + "\n")
                process.stdin.flush()
            except OSError:
                self._stop()
                return "error", "the durable_rules trial process stopped unexpectedly"
            deadline = time.monotonic() + timeout
            ready: list[Any] = []
            while not ready:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    # The child may be stuck inside the C core holding its GIL: only a kill stops it.
                    self._stop()
                    return "timeout", None
                ready, _, _ = select.select([process.stdout], [], [], remaining)
            line = process.stdout.readline()
            if not line:
                self._stop()
                return "error", f"the durable_rules trial process failed (exit {process.poll()})"
            try:
                status, payload = json.loads(line)
            except ValueError:
                self._stop()
                return "error", "the durable_rules trial process gave no readable answer"
            return str(status), payload

    @property
    def pid(self) -> int | None:
        """The child's process id; None before the first request and after `close`."""
        process = self._process
        return None if process is None else process.pid

    def close(self) -> None:
        with self._lock:
            self._stop()

    def __enter__(self) -> TrialWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def durable_trial(
    trials: TrialWorker, ruleset: Ruleset, timeout: float = CHILD_TIMEOUT_SECONDS
) -> tuple[str, Any]:
    """("ok", test results) or ("error", reason) from running the embedded tests on the Python engine
    and loading the ruleset into durable_rules to run them again, in the trial child process (see
    below), which is killed if it takes over `timeout` seconds.
    """
    return trials.trial(ruleset.text, ruleset.source, timeout)


def dry_run(
    trials: TrialWorker,
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
    status, payload = trials.ask(request, timeout)
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


def check_ruleset(
    trials: TrialWorker, ruleset: Ruleset, *, durable_timeout: float = CHILD_TIMEOUT_SECONDS
) -> ValidationReport:
    """Every check publishing requires; the report is `ok` only when nothing is wrong."""
    report = static_report(ruleset)
    report.errors.extend(approver_role_problems(ruleset))
    if report.errors:
        return report
    status, payload = durable_trial(trials, ruleset, durable_timeout)
    if status == "ok":
        report.tests.extend(TestResult(**r) for r in payload)
    else:
        line, column = ruleset.position("rules", False)
        report.errors.append(Problem(ruleset.source, line, column, None, "rules", str(payload)))
    return report


def check_text(
    trials: TrialWorker, text: str, source: str = "<string>"
) -> tuple[Ruleset | None, ValidationReport]:
    """Parse and check in one step: the ruleset (None if it does not parse) and the report, whose errors
    then hold the parse problems."""
    try:
        ruleset = parse_ruleset(text, source)
    except RulesetError as exc:
        return None, ValidationReport(errors=list(exc.problems))
    return ruleset, check_ruleset(trials, ruleset)


if __name__ == "__main__":
    main()
