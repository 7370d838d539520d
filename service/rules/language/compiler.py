"""`compile_ruleset`: a checked ruleset turned into an evaluator for one engine, cached per content hash.

Durable evaluators are kept for the life of the process: durable_rules cannot unload a ruleset, so its
handle stays loaded anyway (only stored versions reach it in the serving process; drafts are tried in
the trial child). The compiled forms and the Python evaluators, which every validated draft creates, are
kept in caches of bounded size: dropping one only costs compiling it again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Literal, TypeVar

from service.rules.language.analysis import analyse
from service.rules.language.canonical import ruleset_sha256
from service.rules.language.document import Ruleset
from service.rules.language.durable_engine import DurableEvaluator
from service.rules.language.evaluation import CompiledRuleset, Evaluator
from service.rules.language.limits import limit_problems
from service.rules.language.problems import RulesetError
from service.rules.language.python_engine import PythonEvaluator

T = TypeVar("T")
Engine = Literal["durable", "python"]
ENGINES: tuple[str, ...] = ("durable", "python")

CACHE_ENTRIES = 256
_compiled: OrderedDict[str, CompiledRuleset] = OrderedDict()
_evaluators: dict[tuple[str, str], Evaluator] = {}  # durable ones: never dropped
_python: OrderedDict[str, Evaluator] = OrderedDict()
_lock = threading.Lock()


def _keep(cache: OrderedDict[str, T], key: str, value: T) -> T:
    """Store (or find) `value` under `key`, dropping the least recently stored entries beyond the bound."""
    with _lock:
        found = cache.setdefault(key, value)
        cache.move_to_end(key)
        while len(cache) > CACHE_ENTRIES:
            cache.popitem(last=False)
        return found


def compiled_ruleset(ruleset: Ruleset) -> CompiledRuleset:
    """The engine-independent compiled form; raises `RulesetError` if the static checks find errors."""
    sha = ruleset_sha256(ruleset)
    compiled = _compiled.get(sha)
    if compiled is not None:
        return compiled
    analysis = analyse(ruleset)
    if analysis.errors:
        raise RulesetError(analysis.errors)
    return _keep(_compiled, sha, CompiledRuleset(ruleset, analysis.normal, sha))


def compile_ruleset(ruleset: Ruleset, engine: Engine = "durable", *, version: int = 0) -> Evaluator:
    """An evaluator of this ruleset version; compiling the same content twice reuses the first one."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: expected durable or python")
    sha = ruleset_sha256(ruleset)
    if engine == "python":
        found = _python.get(sha)
        if found is None:
            found = _keep(_python, sha, PythonEvaluator(compiled_ruleset(ruleset)))
        return found if found.version == version else found.with_version(version)
    evaluator = _evaluators.get((sha, engine))
    if evaluator is None:
        compiled = compiled_ruleset(ruleset)
        problems = limit_problems(ruleset, [r.norm for r in sorted(compiled.rules, key=lambda r: r.index)])
        if problems:
            raise RulesetError(problems)
        with _lock:
            evaluator = _evaluators.get((sha, engine))
            if evaluator is None:
                evaluator = DurableEvaluator(compiled)
                _evaluators[(sha, engine)] = evaluator
    return evaluator if evaluator.version == version else evaluator.with_version(version)
