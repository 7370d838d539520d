"""`retail-policy`: serve the API, migrate the database, manage keys, stock, rulesets and simulations."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import shutil
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from service.settings import VAR_DIR, SettingsError, get_settings

T = TypeVar("T")
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _area_registrations() -> list[Register]:
    """Each area adds its own sub-commands; an area not installed simply adds none."""
    registrations: list[Register] = []
    for module_name in ("service.stock.cli", "service.rules.cli", "simulators.cli"):
        try:
            module = __import__(module_name, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        registrations.append(module.register)
    return registrations


async def _migrate() -> str:
    from service.db.engine import create_engine
    from service.db.migrate import upgrade

    settings = get_settings()
    engine = create_engine(settings.database)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    return settings.database.url


def cmd_db_upgrade(_args: argparse.Namespace) -> int:
    url = asyncio.run(_migrate())
    print(f"database at {url} is up to date", file=sys.stderr)
    return 0


async def _partitions(ahead_days: int, retention_days: int, journal_retention_days: int) -> dict[str, Any]:
    from dataclasses import asdict

    from service.db.engine import create_engine
    from service.db.partitions import maintain

    await _migrate()
    engine = create_engine(get_settings().database)
    try:
        today = datetime.now(UTC).date()
        report = await maintain(engine, today, ahead_days, retention_days, journal_retention_days)
        if engine.dialect.name != "postgresql":
            # SQLite: no partitions; the journal's retention folds and deletes its old days
            return (
                {"partitioned": False, "folded": report.folded}
                if journal_retention_days
                else {"partitioned": False}
            )
        return {"partitioned": True, **asdict(report)}
    finally:
        await engine.dispose()


def cmd_db_partitions(args: argparse.Namespace) -> int:
    database = get_settings().database
    ahead = database.partitions_ahead_days if args.ahead_days is None else args.ahead_days
    retention = database.decision_log_retention_days if args.retention_days is None else args.retention_days
    journal = database.journal_retention_days
    if args.journal_retention_days is not None:
        journal = args.journal_retention_days
    if ahead < 0 or retention < 0 or journal < 0:
        print("--ahead-days, --retention-days and --journal-retention-days take 0 or more", file=sys.stderr)
        return 2
    print(json.dumps(asyncio.run(_partitions(ahead, retention, journal))))
    return 0


async def _with_sessions(work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(sessions)` against the migrated database of the settings."""
    from service.db.engine import create_engine, session_factory

    await _migrate()
    engine = create_engine(get_settings().database)
    try:
        return await work(session_factory(engine))
    finally:
        await engine.dispose()


def _actor() -> str:
    """Who runs a key command, for the audit log: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _expiry(text: str | None) -> datetime | None:
    from service.errors import FieldError, Invalid

    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(
            "bad expiry",
            [FieldError("expires_at", "an ISO 8601 time with offset, e.g. 2027-01-31T00:00:00Z")],
        ) from None


def _run_key_command(work: Callable[[Any], Awaitable[T]], show: Callable[[T], None]) -> int:
    """Run a key command; a refused one prints `error: <field>: <reason>` on stderr (2 bad input, 1 else)."""
    from service.errors import Invalid, ServiceError

    try:
        result = asyncio.run(_with_sessions(work))
    except ServiceError as exc:
        reason = f"{exc.errors[0].field}: {exc.errors[0].reason}" if exc.errors else ""
        what = reason if isinstance(exc, Invalid) else f"{exc.detail} ({reason})" if reason else exc.detail
        print(f"error: {what}", file=sys.stderr)
        return 2 if isinstance(exc, Invalid) else 1
    show(result)
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from service.security.keys import create_key

    roles = [role.strip() for role in args.roles.split(",") if role.strip()]

    async def work(sessions: Any) -> str:
        return await create_key(sessions, args.name, roles, _expiry(args.expires_at), actor=_actor())

    return _run_key_command(work, print)


def cmd_keys_list(args: argparse.Namespace) -> int:
    from service.security.keys import KeyRecord, list_keys

    def show(records: list[KeyRecord]) -> None:
        if args.json:
            print(json.dumps([_key_json(record) for record in records], indent=2))
            return
        print(f"{'id':<12}  {'name':<24}  {'roles':<28}  {'created_at':<25}  {'expires_at':<25}  revoked_at")
        for r in records:
            print(
                f"{r.id:<12}  {r.name:<24}  {','.join(r.roles):<28}  {_when(r.created_at):<25}  "
                f"{_when(r.expires_at):<25}  {_when(r.revoked_at)}"
            )

    return _run_key_command(list_keys, show)


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from service.security.keys import KeyRecord, revoke_key

    async def work(sessions: Any) -> KeyRecord:
        return await revoke_key(sessions, args.key, actor=_actor())

    def show(record: KeyRecord) -> None:
        print(
            f"revoked key {record.id} ({record.name}); running servers refuse it within 1 s", file=sys.stderr
        )

    return _run_key_command(work, show)


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from service.security.keys import IssuedKey, KeyRecord, rotate_key

    async def work(sessions: Any) -> tuple[KeyRecord, IssuedKey]:
        return await rotate_key(sessions, args.key, _expiry(args.expires_at), actor=_actor())

    def show(result: tuple[KeyRecord, IssuedKey]) -> None:
        old, new = result
        print(f"key {old.id} revoked; its replacement is {new.record.id}", file=sys.stderr)
        print(new.key)

    return _run_key_command(work, show)


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "-"


def _key_json(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "roles": record.roles,
        "created_at": record.created_at.isoformat(),
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
    }


SERVERS = ("uvicorn", "granian")
KEEP_ALIVE_SECONDS = 75


def run_server(target: str, *, server: str, host: str, port: int, workers: int, log_level: str) -> None:
    """Serve the ASGI app factory `target` ("module:function") with `workers` processes.

    uvicorn, the default, runs with httptools and uvloop (its `standard` extras); several workers accept
    from one listening socket, evenly (`service.workers`); granian (Rust HTTP/1.1, uvloop) is the alternative.
    docs/benchmarks.md has the measurements behind the choice."""
    if server == "granian":
        from granian import Granian
        from granian.constants import Interfaces, Loops
        from granian.http import HTTP1Settings
        from granian.log import LogLevels

        Granian(
            target,
            address=host,
            port=port,
            interface=Interfaces.ASGI,
            workers=workers,
            loop=Loops.uvloop,
            factory=True,
            log_level=LogLevels(log_level),
            log_access=False,
            # hyper's header read timeout, which may also bound the idle wait between two requests on a
            # kept-alive connection: longer than a balancer's idle timeout, as for uvicorn below
            http1_settings=HTTP1Settings(header_read_timeout=KEEP_ALIVE_SECONDS * 1000),
            # a worker that does not stop within this after SIGTERM is killed
            workers_kill_timeout=10,
        ).serve()
        return
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    options: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "workers": workers,
        "log_level": log_level,
        "access_log": False,
        "http": "httptools",
        "loop": "uvloop",
        "timeout_graceful_shutdown": 10,
        # Longer than a balancer's idle timeout (60 s is common): a connection the client or balancer
        # still believes open is never closed under it between two requests.
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
    }
    if workers > 1:
        from service.workers import SharedListener

        try:
            listening = SharedListener.bound(host, port, workers)
        except OSError as error:
            raise SystemExit(f"cannot listen on {host}:{port}: {error}") from error
        # each worker's loop accepts from the one socket so that connections spread evenly
        options["loop"] = "service.workers:BalancingLoop"
        Multiprocess(uvicorn.Config(target, **options), sockets=[listening]).run()
        return
    uvicorn.run(target, **options)


def cmd_serve(args: argparse.Namespace) -> int:
    if args.server not in SERVERS:
        print(
            f"configuration error: HTTP_SERVER={args.server!r}: expected granian or uvicorn", file=sys.stderr
        )
        return 2
    os.environ["HOST"], os.environ["PORT"], os.environ["WORKERS"] = (
        args.host,
        str(args.port),
        str(args.workers),
    )
    asyncio.run(_migrate())
    if args.demo:
        from service.demo import load_demo

        admin_key = asyncio.run(load_demo())
        print(f"\n  Retail policy service: http://{args.host}:{args.port}  (OpenAPI: /schema)")
        print(
            f"  admin API key: {admin_key}\n  try: curl -H 'Authorization: Bearer {admin_key}' "
            f"http://{args.host}:{args.port}/v1/stock/SKU-TEE-M\n",
            flush=True,
        )
    os.environ["AUTO_MIGRATE"] = "0"
    if args.workers > 1:
        # Each worker keeps its own metrics; the multiprocess collector merges them on /metrics.
        metrics_dir = VAR_DIR / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())
    run_server(
        "service.app:create_app",
        server=args.server,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retail-policy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API (migrates the database first)")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    serve.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "1")))
    serve.add_argument(
        "--server",
        choices=SERVERS,
        default=os.environ.get("HTTP_SERVER", "uvicorn"),
        help="the HTTP server (default: uvicorn, or HTTP_SERVER)",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.add_argument("--demo", action="store_true", help="load the demo network and print an admin API key")
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply every migration").set_defaults(func=cmd_db_upgrade)
    partitions = db.add_parser(
        "partitions",
        help="PostgreSQL: make the day partitions of the decision log and journal ahead, drop expired days; "
        "fold the journal's expired days into its checkpoint (also on SQLite)",
    )
    partitions.add_argument("--ahead-days", type=int, help="days after today (PARTITIONS_AHEAD_DAYS)")
    partitions.add_argument(
        "--retention-days", type=int, help="decision log days kept, 0 keeps all (DECISION_LOG_RETENTION_DAYS)"
    )
    partitions.add_argument(
        "--journal-retention-days",
        type=int,
        help="stock journal days kept, older ones folded into its checkpoint; 0 keeps all (JOURNAL_RETENTION_DAYS)",
    )
    partitions.set_defaults(func=cmd_db_partitions)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    expires_help = "ISO 8601 time with offset after which the key is refused (default: never)"
    create = keys.add_parser("create", help="create a key and print it (alone, on stdout)")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--roles", required=True, help="comma-separated: decide,stock,author,publisher,planner,admin"
    )
    create.add_argument("--expires-at", help=expires_help)
    create.set_defaults(func=cmd_keys_create)
    listing = keys.add_parser("list", help="every key: id, name, roles, created, expiry, revocation")
    listing.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    listing.set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key; servers refuse it within 1 s")
    revoke.add_argument("key", metavar="NAME|ID", help="the key's id, or the name of one active key")
    revoke.set_defaults(func=cmd_keys_revoke)
    rotate = keys.add_parser(
        "rotate", help="issue a new key with the same name and roles, print it, and revoke the old one"
    )
    rotate.add_argument("key", metavar="NAME|ID", help="the key's id, or the name of one active key")
    rotate.add_argument("--expires-at", help="the new key's expiry (default: the old key's)")
    rotate.set_defaults(func=cmd_keys_rotate)

    for register in _area_registrations():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        get_settings()
        result: int = args.func(args)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
