"""The ruleset lifecycle: create a version, publish it under four-eyes, shadow it, roll back, seed.

Each change runs in one transaction that first takes the store's write lock (and bumps the
generation when live decisions are affected), writes its audit row, and commits, so a failure leaves
nothing half-applied. Validation (parsing, checks, embedded tests on both engines) runs before the
transaction, off the event loop, because the engine-limit check compiles in a child process.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.models.rulesets import RulesetKindRow, RulesetRow, RulesetVersionRow
from service.errors import Conflict, FieldError, Invalid, NotFound
from service.rules import repository as repo
from service.rules.language import Problem, Ruleset, RulesetError, ValidationReport, parse_ruleset
from service.rules.language import ruleset_sha256 as content_sha256
from service.rules.repository import DRAFT, PUBLISHED, RETIRED, VersionRecord
from service.rules.trial import TrialWorker, check_ruleset

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"

SessionFactory = async_sessionmaker[AsyncSession]


class InvalidRuleset(Invalid):
    """The ruleset text is not a valid ruleset; each error names its path, file, line and column."""

    def __init__(self, problems: list[Problem]) -> None:
        first = located(problems[0]) if problems else "no details"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"the ruleset is not valid: {first}{more}", [problem_error(p) for p in problems])
        self.title = "Invalid ruleset"
        self.problems = problems


def problem_error(problem: Problem) -> FieldError:
    """A ruleset problem as a field error: the document path, plus where it is in the file."""
    return FieldError(
        problem.path or "yaml",
        problem.message,
        {
            "source": problem.source,
            "line": problem.line,
            "column": problem.column,
            "rule_id": problem.rule_id,
        },
    )


def _not_found(reason: str, field: str) -> NotFound:
    return NotFound(reason, [FieldError(field, reason)])


def _conflict(reason: str, field: str, extra: dict[str, Any] | None = None) -> Conflict:
    return Conflict(reason, [FieldError(field, reason, extra)])


def located(problem: Problem) -> str:
    """One line a person can act on: `file:line:column: [rule R: ][path: ]message`."""
    rule = f"rule {problem.rule_id}: " if problem.rule_id else ""
    path = f"{problem.path}: " if problem.path else ""
    return f"{problem.source}:{problem.line}:{problem.column}: {rule}{path}{problem.message}"


@dataclass(frozen=True)
class Checked:
    """A parsed ruleset with its content hash and validation report."""

    ruleset: Ruleset
    sha256: str
    report: ValidationReport

    @property
    def tests_pass(self) -> bool:
        return all(test.passed for test in self.report.tests)

    @property
    def publishable(self) -> bool:
        return self.report.ok and not self.report.errors and self.tests_pass


def check_text(trials: TrialWorker, text: str, source: str = "<string>") -> Checked:
    """Parse and check ruleset text (the engine checks in `trials`' child); raise `Invalid` with located
    problems when it has errors."""
    try:
        ruleset = parse_ruleset(text, source)
    except RulesetError as exc:
        raise InvalidRuleset(list(exc.problems)) from None
    report = check_ruleset(trials, ruleset)
    if report.errors:
        raise InvalidRuleset(list(report.errors))
    return Checked(ruleset=ruleset, sha256=content_sha256(ruleset), report=report)


async def check_text_async(trials: TrialWorker, text: str, source: str = "<string>") -> Checked:
    return await asyncio.to_thread(check_text, trials, text, source)


@dataclass(frozen=True)
class CreatedVersion:
    record: VersionRecord
    created: bool
    report: dict[str, Any] = field(default_factory=dict)


async def create_version(
    sessions: SessionFactory,
    trials: TrialWorker,
    name: str,
    text: str,
    author: str,
    *,
    source: str | None = None,
) -> CreatedVersion:
    """Store `text` as the next draft version of `name`, or return the version with the same content."""
    checked = await check_text_async(trials, text, source or f"{name}.yaml")
    ruleset = checked.ruleset
    if ruleset.name != name:
        raise Invalid(
            f"the document names ruleset {ruleset.name!r} but was sent to {name!r}",
            [FieldError("ruleset", f"expected {name!r} (the name in the path), found {ruleset.name!r}")],
        )
    report = checked.report.to_dict()
    async with sessions() as session, session.begin():
        await repo.lock_store(session, bump=False)
        existing = await repo.find_by_sha256(session, name, checked.sha256)
        if existing is not None:
            return CreatedVersion(record=existing, created=False, report=existing.validation)
        pointer = await repo.get_ruleset_row(session, name)
        now = repo.utcnow()
        if pointer is None:
            session.add(
                RulesetRow(
                    name=name,
                    kind=ruleset.kind,
                    active_version=None,
                    shadow_version=None,
                    created_at=now,
                    updated_at=now,
                )
            )
        elif pointer.kind != ruleset.kind:
            raise Invalid(
                f"ruleset {name!r} is of kind {pointer.kind!r}; a version cannot change it",
                [FieldError("kind", f"expected {pointer.kind!r}, found {ruleset.kind!r}")],
            )
        number = await repo.next_version_number(session, name)
        row = RulesetVersionRow(
            name=name,
            version=number,
            kind=ruleset.kind,
            status=DRAFT,
            sha256=checked.sha256,
            description=ruleset.description or "",
            yaml_text=text,
            author=author,
            created_at=now,
            validation=report,
        )
        session.add(row)
        await repo.write_audit(
            session,
            actor=author,
            action="ruleset.version.create",
            name=name,
            detail={"version": number, "sha256": checked.sha256, "tests_pass": checked.tests_pass},
        )
        await session.flush()
        return CreatedVersion(record=VersionRecord.from_row(row), created=True, report=report)


async def _require_version(session: AsyncSession, name: str, version: int) -> RulesetVersionRow:
    row = await repo.get_version_row(session, name, version)
    if row is None:
        raise _not_found(f"ruleset {name!r} has no version {version}", "version")
    return row


async def stored_version(sessions: SessionFactory, name: str, version: int) -> VersionRecord:
    """A stored version of any status; 404 naming the version when the ruleset has none by that number."""
    async with sessions() as session:
        return VersionRecord.from_row(await _require_version(session, name, version))


async def _require_ruleset(session: AsyncSession, name: str) -> RulesetRow:
    row = await repo.get_ruleset_row(session, name)
    if row is None:
        raise _not_found(f"no ruleset named {name!r}", "name")
    return row


async def _activate(session: AsyncSession, pointer: RulesetRow, row: RulesetVersionRow) -> int | None:
    """Make `row` the active version of its ruleset; retire the one it replaces; return that one."""
    now = repo.utcnow()
    previous = pointer.active_version
    if previous is not None and previous != row.version:
        old = await repo.get_version_row(session, pointer.name, previous)
        if old is not None:
            old.status = RETIRED
            old.retired_at = now
    row.status = PUBLISHED
    row.retired_at = None
    pointer.active_version = row.version
    if pointer.shadow_version == row.version:
        pointer.shadow_version = None
    pointer.updated_at = now
    defaults = await repo.kind_defaults(session)
    if pointer.kind not in defaults:
        session.add(RulesetKindRow(kind=pointer.kind, ruleset_name=pointer.name, updated_at=now))
    return previous


async def publish(
    sessions: SessionFactory, trials: TrialWorker, name: str, version: int, publisher: str
) -> VersionRecord:
    """Make a draft the active version: never by its author, only when it checks clean and its tests pass."""
    async with sessions() as session:
        row = await _require_version(session, name, version)
        status, author, text = row.status, row.author, row.yaml_text
    if status != DRAFT:
        raise _conflict(
            f"version {version} of {name!r} is {status}; only a draft can be published", "version"
        )
    if author == publisher:
        reason = f"{publisher!r} wrote version {version}; another publisher must publish it (four-eyes)"
        raise Conflict(reason, [FieldError("version", reason)])
    # Checked again: the fact catalogue or the engines may have changed since the draft was stored.
    try:
        checked = await check_text_async(trials, text, f"{name}@{version}")
    except InvalidRuleset as exc:
        reason = f"version {version} of {name!r} no longer passes its checks"
        raise Conflict(reason, [FieldError("version", reason), *exc.errors]) from None
    if not checked.publishable:
        failed = sorted({test.name for test in checked.report.tests if not test.passed})
        raise _conflict(
            f"version {version} of {name!r} fails embedded test(s) {', '.join(failed)}; fix them first",
            "version",
            {"failed_tests": failed, "validation": checked.report.to_dict()},
        )
    async with sessions() as session, session.begin():
        await repo.lock_store(session, bump=True)
        row = await _require_version(session, name, version)
        if row.status != DRAFT:
            raise _conflict(f"version {version} of {name!r} was just {row.status}", "version")
        pointer = await _require_ruleset(session, name)
        previous = await _activate(session, pointer, row)
        row.publisher = publisher
        row.published_at = repo.utcnow()
        await repo.write_audit(
            session,
            actor=publisher,
            action="ruleset.publish",
            name=name,
            detail={"version": version, "sha256": row.sha256, "previous": previous},
        )
        await session.flush()
        return VersionRecord.from_row(row)


async def rollback(sessions: SessionFactory, name: str, version: int | None, actor: str) -> VersionRecord:
    """Publish an earlier published version again (by default the highest below the active one)."""
    async with sessions() as session, session.begin():
        await repo.lock_store(session, bump=True)
        pointer = await _require_ruleset(session, name)
        current = pointer.active_version
        if current is None:
            raise _conflict(f"ruleset {name!r} has no active version to roll back from", "name")
        if version is None:
            earlier = [
                v.version
                for v in await repo.list_versions(session, name)
                if v.published_at is not None and v.version < current
            ]
            if not earlier:
                raise _conflict(f"ruleset {name!r} has no earlier published version", "version")
            version = max(earlier)
        row = await _require_version(session, name, version)
        if version == current:
            raise _conflict(f"version {version} of {name!r} is already active", "version")
        if row.published_at is None:
            raise _conflict(
                f"version {version} of {name!r} was never published; publish it instead of rolling back",
                "version",
            )
        await _activate(session, pointer, row)
        await repo.write_audit(
            session,
            actor=actor,
            action="ruleset.rollback",
            name=name,
            detail={"version": version, "sha256": row.sha256, "previous": current},
        )
        await session.flush()
        return VersionRecord.from_row(row)


async def set_shadow(sessions: SessionFactory, name: str, version: int, actor: str) -> VersionRecord:
    """Run `version` in shadow beside the active one; it replaces any earlier shadow of the ruleset."""
    async with sessions() as session, session.begin():
        await repo.lock_store(session, bump=True)
        pointer = await _require_ruleset(session, name)
        row = await _require_version(session, name, version)
        if pointer.active_version == version:
            raise _conflict(f"version {version} of {name!r} is the active version", "version")
        previous = pointer.shadow_version
        pointer.shadow_version = version
        pointer.updated_at = repo.utcnow()
        await repo.write_audit(
            session,
            actor=actor,
            action="ruleset.shadow.set",
            name=name,
            detail={"version": version, "sha256": row.sha256, "previous": previous},
        )
        return VersionRecord.from_row(row)


async def clear_shadow(sessions: SessionFactory, name: str, version: int, actor: str) -> None:
    """Stop running `version` in shadow."""
    async with sessions() as session, session.begin():
        await repo.lock_store(session, bump=True)
        pointer = await _require_ruleset(session, name)
        await _require_version(session, name, version)
        if pointer.shadow_version != version:
            raise _not_found(f"version {version} of {name!r} is not in shadow", "version")
        pointer.shadow_version = None
        pointer.updated_at = repo.utcnow()
        await repo.write_audit(
            session, actor=actor, action="ruleset.shadow.clear", name=name, detail={"version": version}
        )


async def set_kind_default(sessions: SessionFactory, name: str, actor: str) -> None:
    """Make `name` the ruleset that answers decisions of its kind when a decision names none."""
    async with sessions() as session, session.begin():
        await repo.lock_store(session, bump=True)
        pointer = await _require_ruleset(session, name)
        if pointer.active_version is None:
            raise _conflict(f"ruleset {name!r} has no active version", "name")
        entry = await session.get(RulesetKindRow, pointer.kind)
        previous = entry.ruleset_name if entry is not None else None
        if entry is None:
            session.add(RulesetKindRow(kind=pointer.kind, ruleset_name=name, updated_at=repo.utcnow()))
        else:
            entry.ruleset_name = name
            entry.updated_at = repo.utcnow()
        await repo.write_audit(
            session,
            actor=actor,
            action="ruleset.kind_default",
            name=name,
            detail={"kind": pointer.kind, "previous": previous},
        )


def ruleset_files(path: Path) -> list[Path]:
    """The YAML files at `path` (a file, or a folder searched recursively), in a stable order."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))


def read_ruleset_files(path: Path) -> list[tuple[Path, str]]:
    """(path, text) of every ruleset file at `path`; nothing when `path` does not exist."""
    if not path.exists():
        return []
    return [(file, file.read_text(encoding="utf-8")) for file in ruleset_files(path)]


async def seed_if_empty(
    sessions: SessionFactory, trials: TrialWorker, rulesets_dir: Path
) -> list[tuple[str, int]]:
    """On an empty store, publish every shipped ruleset file as version 1 by `system`.

    Files that fail their checks are logged and skipped so one bad file cannot stop the service;
    `retail-policy rulesets validate` in CI is where they are caught. The first file of a kind (in
    path order) becomes that kind's default ruleset. Safe when several workers start at once: the
    emptiness check and the inserts share one locked transaction.
    """
    async with sessions() as session:
        if not await repo.is_empty(session):
            return []
    texts = await asyncio.to_thread(read_ruleset_files, rulesets_dir)
    checked: list[tuple[Path, str, Checked]] = []
    for path, text in texts:
        try:
            result = await check_text_async(trials, text, str(path))
        except InvalidRuleset as exc:
            log.error("not seeding %s: %s", path, "; ".join(located(p) for p in exc.problems))
            continue
        if not result.publishable:
            log.error("not seeding %s: its embedded tests fail", path)
            continue
        checked.append((path, text, result))
    seeded: list[tuple[str, int]] = []
    async with sessions() as session, session.begin():
        await repo.lock_store(session, bump=True)
        if not await repo.is_empty(session):
            return []
        now = repo.utcnow()
        for path, text, result in checked:
            ruleset = result.ruleset
            if await repo.get_ruleset_row(session, ruleset.name) is not None:
                log.error("not seeding %s: ruleset %s appears in an earlier file", path, ruleset.name)
                continue
            pointer = RulesetRow(
                name=ruleset.name,
                kind=ruleset.kind,
                active_version=None,
                shadow_version=None,
                created_at=now,
                updated_at=now,
            )
            row = RulesetVersionRow(
                name=ruleset.name,
                version=1,
                kind=ruleset.kind,
                status=DRAFT,
                sha256=result.sha256,
                description=ruleset.description or "",
                yaml_text=text,
                author=SYSTEM_ACTOR,
                created_at=now,
                publisher=SYSTEM_ACTOR,
                published_at=now,
                validation=result.report.to_dict(),
            )
            session.add_all([pointer, row])
            await session.flush()
            await _activate(session, pointer, row)
            await session.flush()
            await repo.write_audit(
                session,
                actor=SYSTEM_ACTOR,
                action="ruleset.seed",
                name=ruleset.name,
                detail={"version": 1, "sha256": result.sha256, "file": str(path)},
            )
            seeded.append((ruleset.name, 1))
    if seeded:
        log.info("seeded %d ruleset(s) from %s", len(seeded), rulesets_dir)
    return seeded
