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
