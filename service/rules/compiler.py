"""`compile_ruleset`: a checked ruleset turned into an evaluator for one engine, cached per content hash."""

from __future__ import annotations

import threading
from typing import Literal

from service.rules.analysis import analyse
from service.rules.canonical import ruleset_sha256
from service.rules.document import Ruleset
from service.rules.durable_engine import DurableEvaluator
from service.rules.evaluation import CompiledRuleset, Evaluator
from service.rules.limits import limit_problems
from service.rules.problems import RulesetError
from service.rules.python_engine import PythonEvaluator

Engine = Literal["durable", "python"]
ENGINES: tuple[str, ...] = ("durable", "python")

_compiled: dict[str, CompiledRuleset] = {}
_evaluators: dict[tuple[str, str], Evaluator] = {}
_lock = threading.Lock()


def compiled_ruleset(ruleset: Ruleset) -> CompiledRuleset:
    """The engine-independent compiled form; raises `RulesetError` if the static checks find errors."""
    sha = ruleset_sha256(ruleset)
    compiled = _compiled.get(sha)
    if compiled is not None:
        return compiled
    analysis = analyse(ruleset)
    if analysis.errors:
        raise RulesetError(analysis.errors)
    compiled = CompiledRuleset(ruleset, analysis.normal, sha)
    with _lock:
        return _compiled.setdefault(sha, compiled)


def compile_ruleset(ruleset: Ruleset, engine: Engine = "durable", *, version: int = 0) -> Evaluator:
    """An evaluator of this ruleset version; compiling the same content twice reuses the first one."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: expected durable or python")
    sha = ruleset_sha256(ruleset)
    evaluator = _evaluators.get((sha, engine))
    if evaluator is None:
        compiled = compiled_ruleset(ruleset)
        if engine == "durable":
            problems = limit_problems(
                ruleset, [r.norm for r in sorted(compiled.rules, key=lambda r: r.index)]
            )
            if problems:
                raise RulesetError(problems)
        with _lock:
            evaluator = _evaluators.get((sha, engine))
            if evaluator is None:
                evaluator = DurableEvaluator(compiled) if engine == "durable" else PythonEvaluator(compiled)
                _evaluators[(sha, engine)] = evaluator
    return evaluator if evaluator.version == version else evaluator.with_version(version)
