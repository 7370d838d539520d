"""`retail-policy stock load FILE` (a CSV or JSON snapshot) and `retail-policy stock rebuild`."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from service.settings import get_settings
from service.stock.store import InvalidStockInput, SnapshotRow, StockError

SNAPSHOT_FIELDS = ("sku", "location", "sellable", "damaged", "return_pending", "in_transit")


def read_snapshot(path: Path) -> list[SnapshotRow]:
    """Rows from a CSV with a header (sku, location, sellable[, damaged, return_pending, in_transit])
    or a JSON list of objects with the same fields."""
    text = path.read_text()
    raw: list[dict[str, Any]]
    if path.suffix.lower() == ".json":
        loaded = json.loads(text)
        raw = loaded["rows"] if isinstance(loaded, dict) else loaded
    else:
        raw = []
        for row in csv.DictReader(text.splitlines()):
            raw.append({k: (v if k in ("sku", "location") else int(v or 0)) for k, v in row.items() if k})
    rows: list[SnapshotRow] = []
    for index, item in enumerate(raw):
        try:
            rows.append(msgspec.convert(item, SnapshotRow))
        except msgspec.ValidationError as error:
            raise InvalidStockInput(f"rows[{index}]", str(error)) from None
    return rows


async def _load(path: Path) -> int:
    from service.stock.backends import open_store

    store = await open_store(get_settings())
    try:
        return await store.put_snapshot(read_snapshot(path))
    finally:
        await store.close()


async def _rebuild() -> str:
    from service.stock.recovery import rebuild_redis
    from service.stock.redis import RedisStockStore

    settings = get_settings()
    if settings.stock.backend != "redis" or not settings.stock.redis_url:
        raise StockError("stock rebuild needs the Redis backend: set REDIS_URL")
    store = await RedisStockStore.open(settings.stock.redis_url, settings.database.url)
    try:
        report = await rebuild_redis(store)
    finally:
        await store.close()
    return (
        f"rebuilt from {report.journal_entries} journal entries: {report.positions} positions, "
        f"{report.reservations_held} held of {report.reservations_total} reservations, {report.events} events"
    )


def cmd_load(args: argparse.Namespace) -> int:
    try:
        count = asyncio.run(_load(Path(args.file)))
    except (OSError, ValueError, StockError) as error:
        print(f"stock load failed: {error}", file=sys.stderr)
        return 1
    print(f"loaded {count} rows")
    return 0


def cmd_rebuild(_args: argparse.Namespace) -> int:
    try:
        print(asyncio.run(_rebuild()))
    except TimeoutError:
        print("stock rebuild failed: another rebuild held the lock for too long", file=sys.stderr)
        return 1
    except StockError as error:
        print(f"stock rebuild failed: {error}", file=sys.stderr)
        return 1
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stock = subparsers.add_parser("stock", help="stock snapshots and the Redis rebuild")
    commands = stock.add_subparsers(dest="stock_command", required=True)
    load = commands.add_parser("load", help="load a CSV or JSON snapshot (sku, location, sellable, ...)")
    load.add_argument("file")
    load.set_defaults(func=cmd_load)
    rebuild = commands.add_parser(
        "rebuild", help="wipe and rebuild the Redis stock state from the SQL journal"
    )
    rebuild.set_defaults(func=cmd_rebuild)
