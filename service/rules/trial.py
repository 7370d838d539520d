"""Child-process entry point: load one ruleset into durable_rules and run its embedded tests.

Reads {"text", "source"} as JSON on stdin, writes ["ok", [test results]] or ["error", reason] on stdout.
Run by `check_ruleset` with a time limit, so a ruleset that hangs durable_rules only hangs this process.
"""

from __future__ import annotations

import json
import sys

from service.rules.checks import run_test
from service.rules.compiler import compile_ruleset
from service.rules.document import parse_ruleset
from service.rules.durable_engine import DurableEvaluator


def main() -> None:
    request = json.loads(sys.stdin.read())
    try:
        ruleset = parse_ruleset(request["text"], request["source"])
        evaluator = compile_ruleset(ruleset, "durable")
        assert isinstance(evaluator, DurableEvaluator)
        evaluator.fallback = False
        results = [run_test(evaluator, t).to_dict() for t in ruleset.tests]
        answer: list[object] = ["ok", results]
    except Exception as exc:
        answer = ["error", f"{type(exc).__name__}: {exc}"]
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    main()
