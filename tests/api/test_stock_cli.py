"""`retail-policy stock load FILE`: CSV and JSON snapshots through the CLI; a bad row loads nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from service.stock.sql import SqlStockStore
from service.stock.store import Levels

ROOT = Path(__file__).resolve().parents[2]


def stock_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "STOCK_BACKEND": "sql"}
    env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "service", "stock", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


async def levels_of(url: str, sku: str) -> dict[str, Levels]:
    store = SqlStockStore(url)
    try:
        return (await store.get_levels([sku]))[sku]
    finally:
        await store.close()


async def test_csv_snapshot_is_loaded(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "snapshot.csv"
    path.write_text("sku,location,sellable,damaged,return_pending,in_transit\nTEE,S1,5,1,0,2\nTEE,S2,3,,,\n")
    done = stock_cli(database_url, "load", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loaded 2 rows"
    assert await levels_of(database_url, "TEE") == {"S1": Levels(5, 0, 1, 0, 2), "S2": Levels(3)}


async def test_json_snapshot_is_loaded(sqlite_url: str, tmp_path: Path) -> None:
    from service.db.engine import create_engine
    from service.db.migrate import upgrade
    from service.settings import DatabaseSettings

    engine = create_engine(DatabaseSettings(url=sqlite_url))
    await upgrade(engine)
    await engine.dispose()
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps([{"sku": "MUG", "location": "DC", "sellable": 40}]))
    assert stock_cli(sqlite_url, "load", str(path)).returncode == 0
    assert await levels_of(sqlite_url, "MUG") == {"DC": Levels(40)}


async def test_bad_row_fails_naming_it_and_loads_nothing(sqlite_url: str, tmp_path: Path) -> None:
    from service.db.engine import create_engine
    from service.db.migrate import upgrade
    from service.settings import DatabaseSettings

    engine = create_engine(DatabaseSettings(url=sqlite_url))
    await upgrade(engine)
    await engine.dispose()
    path = tmp_path / "snapshot.json"
    path.write_text(
        json.dumps([{"sku": "MUG", "location": "DC", "sellable": 4}, {"sku": "MUG", "location": "S1"}])
    )
    done = stock_cli(sqlite_url, "load", str(path))
    assert done.returncode == 1
    assert "rows[1]" in done.stderr
    assert await levels_of(sqlite_url, "MUG") == {}


async def _stocked(url: str) -> None:
    """Two items in the master data and their positions in the store, one with a reservation held."""
    from service.db.engine import create_engine, session_factory
    from service.db.models import Item
    from service.masterdata import upsert
    from service.settings import DatabaseSettings
    from service.stock.store import ReservationLine, ReservationRequest, SnapshotRow

    engine = create_engine(DatabaseSettings(url=url))
    try:
        async with session_factory(engine).begin() as session:
            items = [
                {
                    "sku": sku,
                    "category": "audio",
                    "price": 10.0,
                    "cost": 4.0,
                    "case_pack": 1,
                    "lead_time_days": 3,
                }
                for sku in ("HP-100", "SPK-200")
            ]
            await upsert(session, Item, items, "sku")
    finally:
        await engine.dispose()
    store = SqlStockStore(url)
    try:
        await store.put_snapshot(
            [
                SnapshotRow("HP-100", "DC-1", 60, damaged=2, in_transit=4),
                SnapshotRow("HP-100", "N-01", 3),
                SnapshotRow("SPK-200", "DC-1", 12),
                SnapshotRow("NOT-AN-ITEM", "DC-1", 5),
            ]
        )
        request = ReservationRequest("O1", "web", "k1", (ReservationLine("HP-100", "DC-1", 2),), 3600)
        assert (await store.reserve(request)).granted
    finally:
        await store.close()


async def test_export_writes_every_item_position_as_a_snapshot(
    migrated_sqlite_url: str, tmp_path: Path
) -> None:
    await _stocked(migrated_sqlite_url)
    out = tmp_path / "snapshot.json"
    done = stock_cli(migrated_sqlite_url, "export", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"exported 3 rows of 2 SKUs to {out}; 2 of the sellable units are held by open reservations"
    )
    document = json.loads(out.read_text())
    assert set(document) == {"exported_at", "backend", "rows"} and document["backend"] == "sql"
    assert document["rows"] == [
        {
            "sku": "HP-100",
            "location": "DC-1",
            "sellable": 60,
            "damaged": 2,
            "return_pending": 0,
            "in_transit": 4,
        },
        {
            "sku": "HP-100",
            "location": "N-01",
            "sellable": 3,
            "damaged": 0,
            "return_pending": 0,
            "in_transit": 0,
        },
        {
            "sku": "SPK-200",
            "location": "DC-1",
            "sellable": 12,
            "damaged": 0,
            "return_pending": 0,
            "in_transit": 0,
        },
    ]
    # what stock load reads back, and what the simulator takes as starting stock
    assert stock_cli(migrated_sqlite_url, "load", str(out)).returncode == 0
    from simulators.scenario import load_scenario

    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(
        "name: s\nstart: 2026-11-20T00:00:00Z\nduration_hours: 24\nstock_file: snapshot.json\n"
        "network:\n  locations:\n"
        "    - {id: DC-1, type: dc, region: north, lat: 52.4, lon: 13.1}\n"
        "    - {id: N-01, type: store, region: north, lat: 52.5, lon: 13.4}\n"
        "channels: [{id: store_pos, kind: pos}]\n"
        "skus: [{id: HP-100, category: audio, price: 10, cost: 4}, {id: SPK-200, category: audio, price: 10, cost: 4}]\n"
    )
    world = load_scenario(scenario).build()
    assert world.starting_stock == {"HP-100": {"DC-1": 60, "N-01": 3}, "SPK-200": {"DC-1": 12, "N-01": 0}}


async def test_export_of_named_skus_as_csv(migrated_sqlite_url: str, tmp_path: Path) -> None:
    await _stocked(migrated_sqlite_url)
    out = tmp_path / "snapshot.csv"
    done = stock_cli(migrated_sqlite_url, "export", str(out), "--sku", "SPK-200", "--sku", "NOT-AN-ITEM")
    assert done.returncode == 0, done.stderr
    assert out.read_text() == (
        "sku,location,sellable,damaged,return_pending,in_transit\nNOT-AN-ITEM,DC-1,5,0,0,0\nSPK-200,DC-1,12,0,0,0\n"
    )
