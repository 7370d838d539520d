"""`compile_ruleset`: a checked ruleset turned into an evaluator for one engine.

What compiling derives from a `Ruleset` (its engine-independent compiled form, one evaluator per engine) is
kept on that ruleset (`Ruleset.derived`) and goes with it: compiling the same document again, for another
version number or another request, reuses it. The ruleset a durable evaluator loads into durable_rules
belongs to that evaluator and its versions (`service.rules.language.durable_engine.LoadedRuleset`) and is
deleted from the engine when they go.
"""

from __future__ import annotations

from typing import Literal

from service.rules.language.analysis import analyse
from service.rules.language.canonical import ruleset_sha256
from service.rules.language.document import Ruleset
from service.rules.language.durable_engine import DurableEvaluator
from service.rules.language.evaluation import CompiledRuleset, Evaluator
from service.rules.language.limits import limit_problems
from service.rules.language.problems import RulesetError
from service.rules.language.python_engine import PythonEvaluator

Engine = Literal["durable", "python"]
ENGINES: tuple[str, ...] = ("durable", "python")

COMPILED = "compiled"


def compiled_ruleset(ruleset: Ruleset) -> CompiledRuleset:
    """The engine-independent compiled form; raises `RulesetError` if the static checks find errors."""
    found = ruleset.derived.get(COMPILED)
    if isinstance(found, CompiledRuleset):
        return found
    analysis = analyse(ruleset)
    if analysis.errors:
        raise RulesetError(analysis.errors)
    compiled = CompiledRuleset(ruleset, analysis.normal, ruleset_sha256(ruleset))
    # setdefault is atomic: two threads compiling at once both get the one stored first
    kept = ruleset.derived.setdefault(COMPILED, compiled)
    return kept if isinstance(kept, CompiledRuleset) else compiled


def _evaluator(ruleset: Ruleset, engine: Engine) -> Evaluator:
    compiled = compiled_ruleset(ruleset)
    if engine == "python":
        return PythonEvaluator(compiled)
    problems = limit_problems(ruleset, [r.norm for r in sorted(compiled.rules, key=lambda r: r.index)])
    if problems:
        raise RulesetError(problems)
    return DurableEvaluator(compiled)


def compile_ruleset(ruleset: Ruleset, engine: Engine = "durable", *, version: int = 0) -> Evaluator:
    """An evaluator of this ruleset version; compiling the same document twice reuses the first one."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: expected durable or python")
    found = ruleset.derived.get(engine)
    if not isinstance(found, Evaluator):
        made = _evaluator(ruleset, engine)
        kept = ruleset.derived.setdefault(engine, made)
        found = kept if isinstance(kept, Evaluator) else made
    return found if found.version == version else found.with_version(version)
