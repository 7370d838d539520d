"""`retail-policy rulesets ...`: validate and test ruleset files, push drafts, publish, diff, roll back.

`validate` and `test` work on files alone (no database); the other commands act on the configured
database through the same lifecycle functions the HTTP API uses, so the same checks and audit apply.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.errors import ServiceError
from service.rules import lifecycle
from service.rules import repository as repo
from service.rules.language import RulesetError, diff_rulesets, parse_ruleset
from service.rules.trial import TrialWorker, check_ruleset
from service.settings import get_settings

T = TypeVar("T")


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")


def _files(paths: list[str]) -> list[Path] | None:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            _err(f"{raw}: no such file or folder")
            return None
        found.extend(lifecycle.ruleset_files(path))
    if not found:
        _err("no .yaml or .yml files found")
        return None
    return found


def cmd_validate(args: argparse.Namespace) -> int:
    files = _files(args.paths)
    if files is None:
        return 2
    with TrialWorker() as trials:
        return _validate(trials, files)


def _validate(trials: TrialWorker, files: list[Path]) -> int:
    failed = 0
    for path in files:
        try:
            ruleset = parse_ruleset(path.read_text(encoding="utf-8"), str(path))
        except RulesetError as exc:
            failed += 1
            for problem in exc.problems:
                _out(f"error: {lifecycle.located(problem)}")
            continue
        report = check_ruleset(trials, ruleset)
        for problem in report.errors:
            _out(f"error: {lifecycle.located(problem)}")
        for problem in report.warnings:
            _out(f"warning: {lifecycle.located(problem)}")
        if report.errors:
            failed += 1
        else:
            _out(f"ok: {path} ({ruleset.name}, {len(ruleset.rules)} rules)")
    _out(f"{len(files) - failed} of {len(files)} file(s) valid")
    return 1 if failed else 0


def cmd_test(args: argparse.Namespace) -> int:
    files = _files(args.paths)
    if files is None:
        return 2
    engines = ("durable", "python") if args.engine == "both" else (args.engine,)
    with TrialWorker() as trials:
        return _test(trials, files, engines)


def _test(trials: TrialWorker, files: list[Path], engines: tuple[str, ...]) -> int:
    runs = failures = 0
    for path in files:
        try:
            ruleset = parse_ruleset(path.read_text(encoding="utf-8"), str(path))
        except RulesetError as exc:
            failures += 1
            for problem in exc.problems:
                _out(f"error: {lifecycle.located(problem)}")
            continue
        report = check_ruleset(trials, ruleset)
        for problem in report.errors:
            failures += 1
            _out(f"error: {lifecycle.located(problem)}")
        for test in report.tests:
            if test.engine not in engines:
                continue
            runs += 1
            if test.passed:
                _out(f"PASS {path} [{test.engine}] {test.name}")
            else:
                failures += 1
                _out(f"FAIL {path} [{test.engine}] {test.name}")
                _out(f"     expected {json.dumps(test.expected, sort_keys=True, default=str)}")
                _out(f"     actual   {json.dumps(test.actual, sort_keys=True, default=str)}")
    _out(f"{runs} test run(s), {failures} failure(s)")
    return 1 if failures else 0


def _with_store(work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
    """Run `work` against the configured database (migrated first), then close the engine."""
    from service.db.engine import create_engine, session_factory
    from service.db.migrate import upgrade

    async def run() -> T:
        engine = create_engine(get_settings().database)
        try:
            await upgrade(engine)
            return await work(session_factory(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _report_service_error(exc: ServiceError) -> int:
    _err(f"error: {exc.detail}")
    for error in exc.errors:
        details = error.to_dict()
        where = ""
        if "line" in details:
            where = f"{details.get('source')}:{details.get('line')}:{details.get('column')}: "
        _err(f"  {where}{error.field}: {error.reason}")
    return 1


def cmd_push(args: argparse.Namespace) -> int:
    files = _files(args.paths)
    if files is None:
        return 2
    texts = [(path, path.read_text(encoding="utf-8")) for path in files]

    async def push(sessions: async_sessionmaker[AsyncSession]) -> int:
        failed = 0
        for path, text in texts:
            try:
                name = parse_ruleset(text, str(path)).name
                created = await lifecycle.create_version(
                    sessions, trials, name, text, args.actor, source=str(path)
                )
            except RulesetError as exc:
                failed += 1
                for problem in exc.problems:
                    _out(f"error: {lifecycle.located(problem)}")
                continue
            except ServiceError as exc:
                failed += 1
                _report_service_error(exc)
                continue
            record = created.record
            state = "created draft" if created.created else f"unchanged (already {record.status})"
            tests_ok = all(t["passed"] for t in created.report.get("tests", []))
            note = "" if tests_ok else "; embedded tests FAIL, it cannot be published"
            _out(f"{record.name} v{record.version}: {state} sha256={record.sha256[:12]}{note}")
        return 1 if failed else 0

    with TrialWorker() as trials:
        return _with_store(push)


def cmd_publish(args: argparse.Namespace) -> int:
    async def publish(sessions: async_sessionmaker[AsyncSession]) -> repo.VersionRecord:
        return await lifecycle.publish(sessions, trials, args.name, args.version, args.actor)

    try:
        with TrialWorker() as trials:
            record = _with_store(publish)
    except ServiceError as exc:
        return _report_service_error(exc)
    _out(f"{record.name} v{record.version} published by {record.publisher}; workers switch within seconds")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    async def rollback(sessions: async_sessionmaker[AsyncSession]) -> repo.VersionRecord:
        return await lifecycle.rollback(sessions, args.name, args.version, args.actor)

    try:
        record = _with_store(rollback)
    except ServiceError as exc:
        return _report_service_error(exc)
    _out(f"{record.name} v{record.version} is active again")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    async def load(sessions: async_sessionmaker[AsyncSession]) -> list[repo.VersionRecord | None]:
        async with sessions() as session:
            return [await repo.get_version(session, args.name, v) for v in (args.v1, args.v2)]

    old, new = _with_store(load)
    for number, record in zip((args.v1, args.v2), (old, new), strict=True):
        if record is None:
            _err(f"error: ruleset {args.name!r} has no version {number}")
            return 1
    assert old is not None and new is not None
    changes: dict[str, Any] = diff_rulesets(
        parse_ruleset(old.yaml_text, f"{args.name}@{old.version}"),
        parse_ruleset(new.yaml_text, f"{args.name}@{new.version}"),
    )
    _out(json.dumps({"from": old.version, "to": new.version, "diff": changes}, indent=2, default=str))
    return 0


def cmd_list(_args: argparse.Namespace) -> int:
    async def load(sessions: async_sessionmaker[AsyncSession]) -> list[repo.RulesetRecord]:
        async with sessions() as session:
            return await repo.list_rulesets(session)

    for record in _with_store(load):
        default = " (kind default)" if record.is_kind_default else ""
        shadow = f", shadow v{record.shadow_version}" if record.shadow_version else ""
        active = f"v{record.active_version}" if record.active_version else "none"
        _out(f"{record.kind:<13} {record.name:<32} active {active}{shadow}{default}")
    return 0


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "cli"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "rulesets", help="validate, test, push, publish, diff and roll back rulesets"
    )
    sub = parser.add_subparsers(dest="rulesets_command", required=True)

    validate = sub.add_parser("validate", help="check files or folders; exit 1 on errors")
    validate.add_argument("paths", nargs="+", metavar="PATH")
    validate.set_defaults(func=cmd_validate)

    test = sub.add_parser("test", help="run the embedded tests; exit 1 on a failure")
    test.add_argument("paths", nargs="+", metavar="PATH")
    test.add_argument("--engine", choices=["durable", "python", "both"], default="both")
    test.set_defaults(func=cmd_test)

    push = sub.add_parser("push", help="store files as draft versions in the configured database")
    push.add_argument("paths", nargs="+", metavar="PATH")
    push.add_argument(
        "--as", dest="actor", default=_default_actor(), help="author name (default: login name)"
    )
    push.set_defaults(func=cmd_push)

    publish = sub.add_parser("publish", help="publish a draft (four-eyes: not by its author)")
    publish.add_argument("name")
    publish.add_argument("version", type=int)
    publish.add_argument("--as", dest="actor", required=True, help="publisher name")
    publish.set_defaults(func=cmd_publish)

    rollback = sub.add_parser("rollback", help="make an earlier published version active again")
    rollback.add_argument("name")
    rollback.add_argument("--version", type=int, default=None, help="default: the previous published one")
    rollback.add_argument("--as", dest="actor", required=True)
    rollback.set_defaults(func=cmd_rollback)

    diff = sub.add_parser("diff", help="rule-level diff between two stored versions")
    diff.add_argument("name")
    diff.add_argument("v1", type=int)
    diff.add_argument("v2", type=int)
    diff.set_defaults(func=cmd_diff)

    listing = sub.add_parser("list", help="rulesets with their active and shadow versions")
    listing.set_defaults(func=cmd_list)
