"""The per-worker master data cache: a reload that finds the data unchanged keeps the snapshot in use, and
with it what decisions derived from it; a change gives a new snapshot."""

from __future__ import annotations

import asyncio
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


async def test_the_tables_are_read_again_only_when_the_change_mark_moves(tmp_path: Path) -> None:
    engine = create_engine(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'md.db'}"))
    await upgrade(engine)
    sessions = session_factory(engine)

    async def checked(cache: MasterDataCache, times: int) -> None:
        """Ask for the snapshot until the cache has read its change mark `times` more times."""
        target = cache.checks + times
        for _ in range(2000):
            await cache.get()
            if cache.checks >= target:
                return
            await asyncio.sleep(0.005)
        raise AssertionError("the change mark was not read again")

    try:
        async with sessions() as session:
            await upsert(session, Location, [_row(53.8)], "id")
            await session.commit()
        cache = MasterDataCache(sessions, ttl=0.01)
        first = await cache.get()
        assert cache.loads == 1
        await checked(cache, 3)  # nothing changed: the mark is read, the tables are not
        assert cache.loads == 1 and await cache.get() is first

        # another worker (no `invalidate` here) changes a location: the next check reads the tables
        async with sessions() as session:
            await upsert(session, Location, [_row(50.0)], "id")
            await session.commit()
        await checked(cache, 2)
        assert cache.loads == 2
        assert (await cache.get()).locations["DC-1"].lat == 50.0
    finally:
        await engine.dispose()
