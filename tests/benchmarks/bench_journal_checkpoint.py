"""The journal checkpoint at volume on PostgreSQL: how long one maintenance run takes to fold a day of
journal entries into the checkpoint and drop its partition, and how long the rebuild's read takes from the
whole journal against from the checkpoint.

One old day of BENCH_JOURNAL_ENTRIES entries (default 30,000: a third receipts, a third reservations, a
third their commits, over 5,000 SKUs and 7 locations) is written on the server; the rebuild's read of the
whole journal is timed, then the run with a journal retention of one day, then the read of the
checkpoint, which must give the same fold. Run: `python -m pytest tests/benchmarks/bench_journal_checkpoint.py
-s -o python_files='bench_*.py'`.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from service.db.engine import create_engine
from service.db.migrate import upgrade
from service.db.partitions import JOURNAL, maintain
from service.settings import DatabaseSettings
from service.stock.checkpoint import read_state
from tests.conftest import _reset_postgres

ENTRIES = int(os.environ.get("BENCH_JOURNAL_ENTRIES", "30000"))
POSITION = "'SKU' || (g % 5000), 'L' || (g % 7)"
KINDS = {
    "event": (
        f"json_build_array(json_build_array({POSITION}, 1, 0, 0, 0, 0))",
        "json_build_object('sku', 'SKU' || (g % 5000), 'seq', g)",
    ),
    "reserve": (
        f"json_build_array(json_build_array({POSITION}, 0, 1, 0, 0, 0))",
        "json_build_object('id', 'r' || g, 'order_id', 'o' || g, 'channel', 'web', 'key', 'k' || g, "
        "'fp', 'x', 'exp', {at} + 600000, 'created', {at}, 'seq', g, "
        f"'lines', json_build_array(json_build_array({POSITION}, 1)))",
    ),
    "commit": (
        f"json_build_array(json_build_array({POSITION}, -1, -1, 0, 0, 0))",
        "json_build_object('seq', g)",
    ),
}


async def test_folding_a_day_of_the_journal(postgres_server_database: str) -> None:
    await _reset_postgres(postgres_server_database)
    engine = create_engine(DatabaseSettings(url=postgres_server_database))
    try:
        await upgrade(engine)
        today = datetime.now(UTC).date()
        old = today - timedelta(days=5)
        await maintain(engine, old, ahead_days=0, retention_days=0)
        at = int(datetime(old.year, old.month, old.day, 12, tzinfo=UTC).timestamp() * 1000)
        async with engine.begin() as conn:
            for kind, (deltas, record) in KINDS.items():
                prefix = "e" if kind == "event" else "r"
                await conn.execute(
                    text(
                        "INSERT INTO stock_journal (at_ms, kind, ref, deltas, record) "
                        f"SELECT {at}, '{kind}', '{prefix}' || g, {deltas}, {record.format(at=at)} "
                        "FROM generate_series(1, :n) g"
                    ).bindparams(n=ENTRIES // 3),
                )
        started = time.perf_counter()
        whole = await read_state(engine)
        read_whole = time.perf_counter() - started
        started = time.perf_counter()
        report = await maintain(engine, today, ahead_days=0, retention_days=0, journal_retention_days=1)
        fold = time.perf_counter() - started
        started = time.perf_counter()
        checkpointed = await read_state(engine)
        read_checkpoint = time.perf_counter() - started
        assert report.dropped == [JOURNAL.partition(old)]
        assert checkpointed.fold == whole.fold
        assert (checkpointed.checkpoint_entries, checkpointed.journal_entries) == (report.folded, 0)
        print(
            json.dumps(
                {
                    "entries": report.folded,
                    "fold_seconds": round(fold, 2),
                    "rebuild_read_journal_seconds": round(read_whole, 2),
                    "rebuild_read_checkpoint_seconds": round(read_checkpoint, 2),
                    "load_average": os.getloadavg()[0],
                }
            )
        )
    finally:
        await engine.dispose()
