"""The ruleset versions a simulation run decides with, and a memo in front of each evaluator.

A `PolicySet` holds one decider per decision kind. A `RuleDecider` evaluates a compiled ruleset
(`service.rules.language.compile_ruleset`) and remembers the result per combination of the fact values
the ruleset declares: a ruleset's answer depends only on the facts it reads, so two orders that agree on
those facts get the same answer without a second evaluation. The memo can be turned off to measure the
engine itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgspec

KINDS = ("allocation", "availability", "reorder", "transfer", "markdown")
T = TypeVar("T")


def _converter_key(convert: Callable[..., Any]) -> tuple[Any, Any]:
    # A bound classmethod is a new object at every attribute access: key by what it binds instead.
    return (getattr(convert, "__self__", None), getattr(convert, "__func__", convert))


class PolicyError(ValueError):
    """A ruleset named for a simulation cannot be found, read or used."""


class Decider(Protocol):
    evaluations: int
    memo_hits: int

    def decide(self, facts: Mapping[str, Any]) -> Mapping[str, Any]: ...

    def decide_as(self, facts: Mapping[str, Any], convert: Callable[[Mapping[str, Any]], T]) -> T: ...


class RulesetRef(msgspec.Struct, frozen=True):
    """Which version of which ruleset a run used."""

    kind: str
    name: str
    version: str
    sha256: str
    source: str


def default_decider(kind: str) -> Decider | None:
    """The stand-in for a kind no ruleset was given for (None: that kind's decisions are not simulated)."""
    if kind == "allocation":
        return DefaultAllocationDecider()
    if kind in DEFAULT_RESULTS:
        return FixedDecider(DEFAULT_RESULTS[kind])
    return None


class FixedDecider:
    """The answer used for a kind no ruleset was given for: always the same result."""

    def __init__(self, result: Mapping[str, Any]) -> None:
        self.result = dict(result)
        self.evaluations = 0
        self.memo_hits = 0
        self._converted: dict[tuple[Any, Any], Any] = {}

    def decide(self, facts: Mapping[str, Any]) -> Mapping[str, Any]:
        self.memo_hits += 1
        return self.result

    def decide_as(self, facts: Mapping[str, Any], convert: Callable[[Mapping[str, Any]], T]) -> T:
        self.memo_hits += 1
        key = _converter_key(convert)
        if key not in self._converted:
            self._converted[key] = convert(self.result)
        value: T = self._converted[key]
        return value


class DefaultAllocationDecider(FixedDecider):
    """Without an allocation ruleset: DCs and dark stores ship, stores serve pickup and ship-from-store."""

    def __init__(self) -> None:
        super().__init__(DEFAULT_RESULTS["allocation"])
        self._by_mode: dict[str, dict[str, Any]] = {
            mode: {
                **self.result,
                "eligible_location_types": ["store"] if mode != "ship" else ["dc", "dark_store"],
            }
            for mode in ("ship", "pickup", "ship_from_store")
        }
        self._by_mode_converted: dict[tuple[str, tuple[Any, Any]], Any] = {}

    def decide(self, facts: Mapping[str, Any]) -> Mapping[str, Any]:
        self.memo_hits += 1
        found: Mapping[str, Any] = self._by_mode.get(str(facts["order"]["fulfillment"]), self.result)
        return found

    def decide_as(self, facts: Mapping[str, Any], convert: Callable[[Mapping[str, Any]], T]) -> T:
        self.memo_hits += 1
        key = (str(facts["order"]["fulfillment"]), _converter_key(convert))
        if key not in self._by_mode_converted:
            self._by_mode_converted[key] = convert(self.decide(facts))
        value: T = self._by_mode_converted[key]
        return value


class RuleDecider:
    """A compiled ruleset behind a memo keyed by the values of the facts the ruleset declares."""

    def __init__(self, evaluator: Any, fact_paths: list[str], *, memo: bool = True) -> None:
        self.evaluator = evaluator
        self.paths = [tuple(path.split(".")) for path in sorted(fact_paths)]
        self.memo = memo
        self.evaluations = 0
        self.memo_hits = 0
        self._results: dict[tuple[Any, ...], Mapping[str, Any]] = {}
        self._converted: dict[tuple[Callable[..., Any], tuple[Any, ...]], Any] = {}
        self._pairs = [(p[0], p[1]) for p in self.paths] if all(len(p) == 2 for p in self.paths) else None

    def _key(self, facts: Mapping[str, Any]) -> tuple[Any, ...]:
        if self._pairs is not None:
            try:
                # every path is `a.b` and the facts are plain dicts: one subscript pair per fact
                values = [facts[a][b] for a, b in self._pairs]
            except (KeyError, TypeError):
                pass
            else:
                if list not in map(type, values):
                    return tuple(values)
        values = []
        for path in self.paths:
            node: Any = facts
            try:
                for part in path:
                    node = node[part]
            except (KeyError, TypeError, IndexError):
                node = None
            values.append(tuple(node) if type(node) is list else node)
        return tuple(values)

    def _evaluate(self, facts: Mapping[str, Any]) -> Mapping[str, Any]:
        self.evaluations += 1
        result: Mapping[str, Any] = self.evaluator.evaluate(facts, trace="none").result
        return result

    def decide(self, facts: Mapping[str, Any]) -> Mapping[str, Any]:
        if not self.memo:
            return self._evaluate(facts)
        key = self._key(facts)
        found = self._results.get(key)
        if found is not None:
            self.memo_hits += 1
            return found
        result = self._evaluate(facts)
        self._results[key] = result
        return result

    def decide_as(self, facts: Mapping[str, Any], convert: Callable[[Mapping[str, Any]], T]) -> T:
        """The result turned into a domain policy object, converted once per distinct fact combination."""
        if not self.memo:
            return convert(self._evaluate(facts))
        # a bound method equals (and hashes as) any other binding the same function to the same object
        key = (convert, self._key(facts))
        found = self._converted.get(key)
        if found is not None:
            self.memo_hits += 1
            value: T = found
            return value
        converted = convert(self.decide(facts))
        self._converted[key] = converted
        return converted


DEFAULT_RESULTS: dict[str, dict[str, Any]] = {
    # used only when no allocation ruleset is given; see DefaultAllocationDecider
    "allocation": {
        "eligible_location_types": ["dc", "dark_store"],
        "floors": {},
        "ranking": ["fewest_splits", "distance"],
        "max_splits": 2,
        "allow_partial": False,
    },
    "availability": {"eligible": True, "floor": 0, "low_stock_threshold": 0},
}


class PolicySet:
    """One version set: the decider of every kind and the ruleset versions behind them."""

    def __init__(self, label: str, deciders: dict[str, Decider], refs: dict[str, RulesetRef]) -> None:
        self.label = label
        self.deciders = deciders
        self.refs = refs

    def get(self, kind: str) -> Decider | None:
        return self.deciders.get(kind)

    def describe(self) -> dict[str, Any]:
        return {kind: msgspec.to_builtins(self.refs[kind]) for kind in sorted(self.refs)}


def load_ruleset(path: Path) -> Any:
    """Parse one ruleset file with the service's own parser."""
    from service.rules.language import RulesetError, parse_ruleset

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read ruleset {path}: {exc.strerror}") from exc
    try:
        return parse_ruleset(text, source=str(path))
    except RulesetError as exc:
        first = exc.problems[0] if exc.problems else None
        where = f" at {first.path} (line {first.line})" if first else ""
        reason = first.message if first else str(exc)
        raise PolicyError(f"ruleset {path} is invalid{where}: {reason}") from exc


def rule_decider(ruleset: Any, engine: str, *, memo: bool) -> RuleDecider:
    from service.rules.language import compile_ruleset

    evaluator = compile_ruleset(ruleset, engine)  # type: ignore[arg-type]
    return RuleDecider(evaluator, list(ruleset.facts), memo=memo)


def ruleset_ref(ruleset: Any, path: Path, version: str | None = None) -> RulesetRef:
    from service.rules.language import ruleset_sha256

    return RulesetRef(ruleset.kind, ruleset.name, version or path.stem, ruleset_sha256(ruleset), str(path))
