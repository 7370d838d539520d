"""How a decision finds the active ruleset of its kind.

The registry of published rulesets (`service.rules.registry`) answers `snapshot().active(kind)`. Until a
process has one, `FileRulesets` serves the shipped files under `rulesets/<kind>/` as version 0 through the
same small interface, so the decisions do not care which one they get.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from service.rules.language import (
    Evaluation,
    Evaluator,
    Ruleset,
    compile_ruleset,
    parse_ruleset,
    ruleset_sha256,
)
from service.rules.language.evaluation import TraceLevel
from service.rules.reuse import EvaluationReuse


class Evaluated(Protocol):
    @property
    def evaluation(self) -> Evaluation: ...

    def ruleset_ref(self) -> dict[str, Any]: ...


class ShadowOutcome(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class ActiveRules(Protocol):
    """One active ruleset: evaluate the facts, and its shadow version if one runs."""

    def evaluate(self, facts: Mapping[str, Any], trace: TraceLevel = "rules") -> Any: ...

    def shadow_evaluate(self, facts: Mapping[str, Any], active: Any = None) -> Any: ...


class RulesView(Protocol):
    def active(self, kind: str, name: str | None = None) -> Any: ...


class RulesSource(Protocol):
    """Where a request takes its `RulesView` from: the registry (`service.rules.registry.RulesRegistry`)
    or the shipped files (`FileRulesets`)."""

    def snapshot(self) -> RulesView: ...

    def confirm(self, kind: str, held: object | None = None) -> None:
        """Raise when this process must not decide `kind` now on the snapshot `held` (its rulesets are
        unconfirmed)."""
        ...


@dataclass(frozen=True)
class FileEvaluation:
    name: str
    version: int
    sha256: str
    evaluation: Evaluation

    def ruleset_ref(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True)
class FileRuleset:
    name: str
    kind: str
    sha256: str
    evaluator: Evaluator
    version: int = 0
    reuse: EvaluationReuse = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "reuse", EvaluationReuse(self.evaluator))

    def evaluate(self, facts: Mapping[str, Any], trace: TraceLevel = "rules") -> FileEvaluation:
        """Evaluate `facts`; an earlier evaluation of the same fact values may answer (`service.rules.reuse`)."""
        return FileEvaluation(
            self.name, self.version, self.sha256, self.reuse.evaluate(self.evaluator, facts, trace)
        )

    def shadow_evaluate(self, facts: Mapping[str, Any], active: Any = None) -> None:
        return None


class FileRulesets:
    """The first YAML file (by name) of each kind folder, compiled for one engine; or, through `of`,
    any parsed rulesets (one per kind), as a simulation comparing versions needs."""

    def __init__(self, directory: Path | None, engine: str = "python") -> None:
        self._by_kind: dict[str, FileRuleset] = {}
        if directory is None:
            return
        for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
            files = sorted(folder.glob("*.yaml"))
            if files:
                self._add(parse_ruleset(files[0].read_text(), str(files[0])), engine, 0)

    @classmethod
    def of(cls, rulesets: Iterable[tuple[Ruleset, int]], engine: str = "python") -> FileRulesets:
        """A view over the given (ruleset, version) pairs; a later one of the same kind replaces an earlier."""
        view = cls(None, engine)
        for ruleset, version in rulesets:
            view._add(ruleset, engine, version)
        return view

    def _add(self, ruleset: Ruleset, engine: str, version: int) -> None:
        self._by_kind[ruleset.kind] = FileRuleset(
            ruleset.name,
            ruleset.kind,
            ruleset_sha256(ruleset),
            compile_ruleset(ruleset, engine, version=version),  # type: ignore[arg-type]
            version,
        )

    def active(self, kind: str, name: str | None = None) -> FileRuleset | None:
        found = self._by_kind.get(kind)
        if found is None or (name is not None and found.name != name):
            return None
        return found

    def snapshot(self) -> FileRulesets:
        return self

    def confirm(self, kind: str, held: object | None = None) -> None:
        """Files on disk are always current."""
        return None

    async def close(self) -> None:
        return None


def rules_view(rules: RulesSource) -> RulesView:
    """The view a request evaluates against: a registry's current snapshot, taken once per request."""
    return rules.snapshot()
