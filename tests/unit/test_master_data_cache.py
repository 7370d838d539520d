"""The per-worker master data cache: a reload that finds the data unchanged keeps the snapshot in use, and
with it what decisions derived from it; a change gives a new snapshot."""

from __future__ import annotations

from pathlib import Path

from service.db.engine import create_engine, session_factory
from service.db.migrate import upgrade
from service.db.models import Location
from service.masterdata import MasterDataCache, upsert
from service.settings import DatabaseSettings


def _row(lat: float) -> dict[str, object]:
    return {
        "id": "DC-1",
        "type": "dc",
        "region": "north",
        "lat": lat,
        "lon": -1.5,
        "capabilities": [],
        "daily_capacity": None,
        "priority": 1,
    }


async def test_a_reload_keeps_an_unchanged_snapshot_and_replaces_a_changed_one(tmp_path: Path) -> None:
    engine = create_engine(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'md.db'}"))
    await upgrade(engine)
    sessions = session_factory(engine)
    try:
        async with sessions() as session:
            await upsert(session, Location, [_row(53.8)], "id")
            await session.commit()
        cache = MasterDataCache(sessions)
        first = await cache.get()
        assert first.derived("distances", lambda: "made once") == "made once"

        cache.invalidate()  # the next request waits for a reload: the same rows
        again = await cache.get()
        assert again is first
        assert again.derived("distances", lambda: "made again") == "made once"

        async with sessions() as session:
            await upsert(session, Location, [_row(50.0)], "id")
            await session.commit()
        cache.invalidate()
        moved = await cache.get()
        assert moved is not first and moved.locations["DC-1"].lat == 50.0
        assert moved.derived("distances", lambda: "made again") == "made again"
    finally:
        await engine.dispose()
