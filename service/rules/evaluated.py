"""An evaluation of a ruleset as the API and the console answer it: its JSON body, and a rule that cannot
compute with the facts given reported as the caller's input problem (422), never as a server fault."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from service.errors import FieldError, Invalid
from service.rules.language import RuleEvaluationError

T = TypeVar("T")


def cannot_evaluate(exc: RuleEvaluationError) -> Invalid:
    """Facts that a rule cannot compute with are the caller's input problem, not a server fault."""
    extra = {"rule_id": exc.rule_id, "path": exc.path} if exc.rule_id else None
    return Invalid("the facts cannot be evaluated", [FieldError("facts", str(exc), extra)])


def evaluate_or_refuse(run: Callable[[], T]) -> T:
    """`run()`, with a rule that cannot compute on the facts refused as `cannot_evaluate` says."""
    try:
        return run()
    except RuleEvaluationError as exc:
        raise cannot_evaluate(exc) from None


def evaluation_body(
    name: str, version: int, sha256: str, evaluation: Any, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An evaluation as a JSON object, with `extra` keys added (the API converts it to its answer Struct,
    the console renders it)."""
    body = {
        "ruleset": {"name": name, "version": version, "sha256": sha256},
        "result": evaluation.result,
        "matched": list(evaluation.matched),
        "used_default": evaluation.used_default,
        "engine": evaluation.engine,
        "elapsed_us": evaluation.elapsed_us,
        "trace": evaluation.trace,
    }
    if extra:
        body.update(extra)
    return body
