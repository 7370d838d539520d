"""`retail-policy stock load FILE` (a CSV or JSON snapshot), `retail-policy stock export FILE` (the
configured store's positions as a snapshot) and `retail-policy stock rebuild`."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from datetime import UTC, datetime
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
        f"rebuilt from {report.journal_entries} journal entries and {report.checkpoint_entries} checkpointed: "
        f"{report.positions} positions, "
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


EXPORT_BATCH = 500


async def _catalogue() -> list[str]:
    """The SKUs of the items master data (`PUT /v1/items`)."""
    from sqlalchemy import select

    from service.db.engine import create_engine
    from service.db.models import Item

    engine = create_engine(get_settings().database)
    try:
        async with engine.connect() as conn:
            return sorted(sku for (sku,) in await conn.execute(select(Item.sku)))
    finally:
        await engine.dispose()


async def _export(skus: list[str]) -> tuple[list[SnapshotRow], int]:
    """Every position of `skus` (default: the SKUs of the items master data) in the configured store, as
    snapshot rows, and the units held by open reservations in them."""
    from service.stock.backends import open_store

    settings = get_settings()
    if settings.stock.backend == "memory":
        raise StockError("the memory backend keeps stock inside the running service: nothing to export")
    wanted = sorted(set(skus)) if skus else await _catalogue()
    store = await open_store(settings)
    rows: list[SnapshotRow] = []
    reserved = 0
    try:
        for first in range(0, len(wanted), EXPORT_BATCH):
            batch = wanted[first : first + EXPORT_BATCH]
            levels = await store.get_levels(batch)
            for sku in batch:
                for location, level in sorted(levels.get(sku, {}).items()):
                    reserved += level.reserved
                    rows.append(
                        SnapshotRow(
                            sku,
                            location,
                            level.sellable,
                            level.damaged,
                            level.return_pending,
                            level.in_transit,
                        )
                    )
    finally:
        await store.close()
    return rows, reserved


def write_snapshot(rows: list[SnapshotRow], path: Path, backend: str) -> None:
    """A snapshot `stock load` and the simulator's `stock_file` read: CSV with a header, or JSON
    `{"exported_at": ..., "backend": ..., "rows": [...]}` with one row per line."""
    if path.suffix.lower() == ".csv":
        with path.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(SNAPSHOT_FIELDS)
            for row in rows:
                writer.writerow([getattr(row, name) for name in SNAPSHOT_FIELDS])
        return
    exported = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [msgspec.json.encode(row).decode() for row in rows]
    body = ",\n".join(f"  {line}" for line in lines)
    head = json.dumps({"exported_at": exported, "backend": backend})[:-1]
    path.write_text(f'{head}, "rows": [\n{body}\n]}}\n' if rows else f'{head}, "rows": []}}\n', "utf-8")


def cmd_export(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        rows, reserved = asyncio.run(_export(list(args.sku)))
        write_snapshot(rows, Path(args.file), get_settings().stock.backend)
    except (OSError, ValueError, StockError, SQLAlchemyError) as error:
        print(f"stock export failed: {error}", file=sys.stderr)
        return 1
    skus = len({row.sku for row in rows})
    held = f"; {reserved} of the sellable units are held by open reservations" if reserved else ""
    print(f"exported {len(rows)} rows of {skus} SKUs to {args.file}{held}")
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
    export = commands.add_parser(
        "export",
        help="write the configured store's positions as a snapshot (.json or .csv) that stock load and "
        "the simulator's stock_file read",
    )
    export.add_argument("file")
    export.add_argument(
        "--sku", action="append", default=[], help="export this SKU (repeat); default: every item's SKU"
    )
    export.set_defaults(func=cmd_export)
    rebuild = commands.add_parser(
        "rebuild", help="wipe and rebuild the Redis stock state from the SQL journal"
    )
    rebuild.set_defaults(func=cmd_rebuild)
