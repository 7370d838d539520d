"""Which ruleset versions each simulation run uses.

The baseline is the scenario's own `rulesets:` (kind -> YAML path, relative to the scenario file), and for
the kinds it leaves out, the shipped ruleset in `rulesets/<kind>/`. Each `--ruleset` argument makes one more
run: the baseline with the named versions put in place of the ones of their kind. An argument is a YAML
path, `NAME@PATH` (the file must hold ruleset NAME), `NAME@VERSION` (a version in the ruleset store), or
several of those joined by commas for one run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators.policy import (
    KINDS,
    Decider,
    PolicyError,
    PolicySet,
    RulesetRef,
    default_decider,
    load_ruleset,
    rule_decider,
    ruleset_ref,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = REPO_ROOT / "rulesets"


@dataclass(frozen=True)
class VersionSet:
    """A label and, per decision kind, the parsed ruleset and where it came from."""

    label: str
    rulesets: dict[str, tuple[Any, RulesetRef]]

    def policy_set(self, engine: str, *, memo: bool = True) -> PolicySet:
        """Fresh deciders (with empty memos and counters) for one run."""
        deciders: dict[str, Decider] = {}
        for kind in KINDS:
            fallback = default_decider(kind)
            if fallback is not None:
                deciders[kind] = fallback
        for kind, (ruleset, _) in self.rulesets.items():
            deciders[kind] = rule_decider(ruleset, engine, memo=memo)
        return PolicySet(self.label, deciders, {kind: ref for kind, (_, ref) in self.rulesets.items()})


def shipped_ruleset(kind: str, root: Path = SHIPPED) -> Path | None:
    """The shipped ruleset file of a kind: `<kind>/default.yaml` if present, else the first by name."""
    folder = root / kind
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    for path in files:
        if path.stem in ("default", kind):
            return path
    return files[0] if files else None


def _load(path: Path, expected_name: str | None = None) -> tuple[Any, RulesetRef]:
    ruleset = load_ruleset(path)
    if ruleset.kind not in KINDS:
        raise PolicyError(f"ruleset {path}: kind {ruleset.kind!r} is not a decision kind")
    if expected_name is not None and ruleset.name != expected_name:
        raise PolicyError(
            f"{expected_name}@{path}: the file holds ruleset {ruleset.name!r}, not {expected_name!r}"
        )
    return ruleset, ruleset_ref(ruleset, path)


def baseline(
    scenario_rulesets: dict[str, str], scenario_dir: Path, *, shipped_root: Path = SHIPPED
) -> VersionSet:
    chosen: dict[str, tuple[Any, RulesetRef]] = {}
    for kind in KINDS:
        if kind in scenario_rulesets:
            path = Path(scenario_rulesets[kind])
            if not path.is_absolute():
                candidate = scenario_dir / path
                path = candidate if candidate.exists() else REPO_ROOT / path
            ruleset, ref = _load(path)
            if ruleset.kind != kind:
                raise PolicyError(f"$.rulesets.{kind}: {path} holds a {ruleset.kind} ruleset")
            chosen[kind] = (ruleset, ref)
            continue
        shipped = shipped_ruleset(kind, shipped_root)
        if shipped is not None:
            chosen[kind] = _load(shipped)
    return VersionSet("shipped", chosen)


StoreLookup = Callable[[str, int], tuple[Any, RulesetRef]]


def store_lookup(database: Any) -> StoreLookup:
    """Read `NAME@VERSION` from the ruleset store of the service's database (`DatabaseSettings`)."""

    def lookup(name: str, version: int) -> tuple[Any, RulesetRef]:
        return asyncio.run(_fetch(database, name, version))

    return lookup


async def _fetch(database: Any, name: str, version: int) -> tuple[Any, RulesetRef]:
    from service.db.engine import create_engine, session_factory
    from service.rules import repository as repo
    from service.rules.language import RulesetError, parse_ruleset

    engine = create_engine(database)
    try:
        async with session_factory(engine)() as session:
            record = await repo.get_version(session, name, version)
    except Exception as exc:  # no database, or one without the ruleset tables
        raise PolicyError(f"--ruleset {name}@{version}: cannot read the ruleset store ({exc})") from exc
    finally:
        await engine.dispose()
    if record is None:
        raise PolicyError(
            f"--ruleset {name}@{version}: the ruleset store has no version {version} of {name!r}"
        )
    try:
        ruleset = parse_ruleset(record.yaml_text, source=f"{name}@{version}")
    except RulesetError as exc:
        raise PolicyError(f"--ruleset {name}@{version}: the stored version cannot be read: {exc}") from exc
    return ruleset, RulesetRef(ruleset.kind, ruleset.name, str(record.version), record.sha256, "store")


def _parse_part(part: str, lookup: StoreLookup | None) -> tuple[Any, RulesetRef]:
    name: str | None = None
    target = part
    if "@" in part and not Path(part).exists():
        name, _, target = part.partition("@")
    if name and target.isdigit():
        if lookup is None:
            raise PolicyError(f"--ruleset {part}: no ruleset store to read versions from")
        return lookup(name, int(target))
    path = Path(target)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise PolicyError(f"--ruleset {part}: no such file {path}")
        return _load(path, name)
    raise PolicyError(f"--ruleset {part}: expected a ruleset YAML file, NAME@PATH or NAME@VERSION")


def resolve(specs: list[str], base: VersionSet, lookup: StoreLookup | None = None) -> list[VersionSet]:
    """One version set per argument (the baseline alone when there is none); `lookup` reads NAME@VERSION
    from the ruleset store."""
    if not specs:
        return [base]
    sets: list[VersionSet] = []
    seen: set[str] = set()
    for spec in specs:
        chosen = dict(base.rulesets)
        labels: list[str] = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            ruleset, ref = _parse_part(part, lookup)
            chosen[ruleset.kind] = (ruleset, ref)
            labels.append(f"{ref.name}@{ref.version}")
        label = "+".join(labels) or base.label
        unique = label
        n = 2
        while unique in seen:
            unique = f"{label}#{n}"
            n += 1
        seen.add(unique)
        sets.append(VersionSet(unique, chosen))
    return sets
