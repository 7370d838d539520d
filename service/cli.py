"""`retail-policy`: serve the API, migrate the database, manage keys, stock, rulesets and simulations."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from collections.abc import Callable, Sequence

from service.settings import VAR_DIR, SettingsError, get_settings

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


async def _create_key(name: str, roles: list[str]) -> str:
    from service.db.engine import create_engine, session_factory
    from service.security.keys import create_key

    await _migrate()
    engine = create_engine(get_settings().database)
    try:
        return await create_key(session_factory(engine), name, roles)
    finally:
        await engine.dispose()


def cmd_keys_create(args: argparse.Namespace) -> int:
    roles = [role.strip() for role in args.roles.split(",") if role.strip()]
    from service.errors import Invalid

    try:
        key = asyncio.run(_create_key(args.name, roles))
    except Invalid as exc:
        print(f"error: {exc.errors[0].field}: {exc.errors[0].reason}", file=sys.stderr)
        return 2
    print(key)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

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
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
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
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.add_argument("--demo", action="store_true", help="load the demo network and print an admin API key")
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply every migration").set_defaults(func=cmd_db_upgrade)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key and print it (alone, on stdout)")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--roles", required=True, help="comma-separated: decide,stock,author,publisher,planner,admin"
    )
    create.set_defaults(func=cmd_keys_create)

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
