"""Day partitions of the decision log, its traces and the stock journal on PostgreSQL
(service/db/partitions.py, migrations 0015 and 0020): rows kept by the migration and its downgrade,
partitions made ahead, rows in their day's partition, the decision log's retention dropping its old days
and their traces, the journal's folding its old days
into the journal checkpoint and dropping them (on SQLite deleting them), lookups by decision id and order id
through an index. SQLite keeps plain tables."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.db.engine import create_engine, session_factory
from service.db.migrate import downgrade, upgrade
from service.db.partitions import DECISIONS, JOURNAL, TRACES, maintain
from service.decisions.ids import uuid7
from service.decisions.log import SqlDecisionLog
from service.decisions.record import DecisionRecord
from service.settings import DatabaseSettings
from tests.conftest import _reset_postgres

TODAY = datetime.now(UTC).date()
BEFORE = "0014_reservation_intents"


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@pytest.fixture
async def pg(postgres_server_database: str) -> AsyncIterator[AsyncEngine]:
    """An empty PostgreSQL database of this session's (not migrated)."""
    await _reset_postgres(postgres_server_database)
    engine = create_engine(DatabaseSettings(url=postgres_server_database))
    try:
        yield engine
    finally:
        await engine.dispose()


async def add_decision(conn: AsyncConnection, created: datetime, subject: str, decision_id: str = "") -> str:
    decision_id = decision_id or str(uuid7(ms(created)))
    await conn.execute(
        text(
            "INSERT INTO decisions (id, kind, created_at, subject, ruleset_name, ruleset_version, "
            "ruleset_sha256, request, decision, timings) VALUES (:id, 'allocation', :at, :subject, 'r', 1, "
            "'x', '{}', '{}', '{}')"
        ),
        {"id": decision_id, "at": created, "subject": subject},
    )
    return decision_id


async def add_trace(conn: AsyncConnection, day: date, digest: str) -> None:
    await conn.execute(
        text("INSERT INTO decision_traces (day, digest, trace) VALUES (:day, :digest, '{}')"),
        {"day": day, "digest": digest},
    )


async def add_journal(conn: AsyncConnection, moment: datetime, ref: str) -> int:
    found = await conn.execute(
        text(
            "INSERT INTO stock_journal (at_ms, kind, ref, deltas) VALUES (:at, 'reserve', :ref, '[]') "
            "RETURNING id"
        ),
        {"at": ms(moment), "ref": ref},
    )
    return int(found.scalar_one())


async def where(conn: AsyncConnection, table: str) -> dict[str, str]:
    """key -> the partition holding it (subject of a decision, ref of a journal entry)."""
    key = {"decisions": "subject", "decision_traces": "digest"}.get(table, "ref")
    rows = await conn.execute(text(f"SELECT {key}, tableoid::regclass::text FROM {table}"))
    return {str(k): str(p) for k, p in rows}


async def partition_names(conn: AsyncConnection, table: str) -> set[str]:
    rows = await conn.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :t"
        ),
        {"t": table},
    )
    return {str(name) for (name,) in rows}


async def test_the_migration_keeps_every_row_and_partitions_by_day_and_the_downgrade_keeps_them_too(
    pg: AsyncEngine,
) -> None:
    await upgrade(pg, BEFORE)
    old_day, last_week = date(2024, 2, 29), TODAY - timedelta(days=6)
    async with pg.begin() as conn:
        ids = [
            await add_decision(conn, at(old_day), "old"),
            await add_decision(conn, at(last_week), "last-week"),
            await add_decision(conn, at(TODAY), "today"),
        ]
        journal = [
            await add_journal(conn, at(old_day), "j-old"),
            await add_journal(conn, at(TODAY), "j-today"),
        ]
    await upgrade(pg)
    async with pg.begin() as conn:
        assert await where(conn, "decisions") == {
            "old": "decisions_p20240229",
            "last-week": DECISIONS.partition(last_week),
            "today": DECISIONS.partition(TODAY),
        }
        assert await where(conn, "stock_journal") == {
            "j-old": "stock_journal_p20240229",
            "j-today": JOURNAL.partition(TODAY),
        }
        kept = await conn.execute(text("SELECT id FROM decisions ORDER BY created_at"))
        assert [row[0] for row in kept] == ids
        for spec in (DECISIONS, JOURNAL):
            names = await partition_names(conn, spec.table)
            assert {spec.partition(TODAY + timedelta(days=n)) for n in range(8)} <= names
            assert spec.default in names
        # the journal's ids go on from where they were
        assert await add_journal(conn, at(TODAY), "j-next") > max(journal)

    await downgrade(pg, BEFORE)
    async with pg.begin() as conn:
        assert await where(conn, "decisions") == {s: "decisions" for s in ("old", "last-week", "today")}
        assert set((await where(conn, "stock_journal")).values()) == {"stock_journal"}
        assert await partition_names(conn, "decisions") == set()
        assert await add_journal(conn, at(TODAY), "j-after") > max(journal) + 1
    await upgrade(pg)
    async with pg.begin() as conn:
        assert len(await where(conn, "stock_journal")) == 4


async def test_maintenance_makes_days_ahead_and_takes_rows_out_of_the_default_partition(
    pg: AsyncEngine,
) -> None:
    await upgrade(pg)
    later = TODAY + timedelta(days=20)
    async with pg.begin() as conn:
        await add_decision(conn, at(later), "later")
        await add_trace(conn, later, "t-later")
        await add_journal(conn, at(later), "j-later")
        assert (await where(conn, "decisions"))["later"] == DECISIONS.default
        assert (await where(conn, "decision_traces"))["t-later"] == TRACES.default
    report = await maintain(pg, TODAY + timedelta(days=15), ahead_days=7, retention_days=0)
    expected = {TODAY + timedelta(days=n) for n in range(15, 23)} - {
        TODAY + timedelta(days=n) for n in range(8)
    }
    assert set(report.created) == {s.partition(d) for s in (DECISIONS, TRACES, JOURNAL) for d in expected}
    assert report.moved == 3
    async with pg.begin() as conn:
        assert (await where(conn, "decisions"))["later"] == DECISIONS.partition(later)
        assert (await where(conn, "decision_traces"))["t-later"] == TRACES.partition(later)
        assert (await where(conn, "stock_journal"))["j-later"] == JOURNAL.partition(later)
    again = await maintain(pg, TODAY + timedelta(days=15), ahead_days=7, retention_days=0)
    assert again.created == [] and again.dropped == []


async def test_retention_drops_the_decision_logs_old_days_only(pg: AsyncEngine) -> None:
    await upgrade(pg)
    days = [TODAY - timedelta(days=n) for n in (40, 31, 30, 29, 1)]
    async with pg.begin() as conn:
        for day in days:
            await add_decision(conn, at(day), f"d{day}")
            await add_trace(conn, day, f"t{day}")
            await add_journal(conn, at(day), f"j{day}")
        # far before any partition: lands in the default partition
        await add_decision(conn, at(date(2020, 1, 1)), "ancient")
        await add_trace(conn, date(2020, 1, 1), "ancient")
        await add_decision(conn, at(TODAY + timedelta(days=400)), "future")
        await add_trace(conn, TODAY + timedelta(days=400), "future")
    async with pg.begin() as conn:
        assert (await where(conn, "decisions"))["ancient"] == DECISIONS.default
    # give every day its partition first, as a service running through those days would have
    for day in days:
        await maintain(pg, day, ahead_days=0, retention_days=0)
    report = await maintain(pg, TODAY, ahead_days=7, retention_days=30)
    assert sorted(report.dropped) == sorted(s.partition(d) for s in (DECISIONS, TRACES) for d in days[:2])
    assert report.trimmed == 2  # "ancient" from the default partitions
    async with pg.begin() as conn:
        left = await where(conn, "decisions")
        assert set(left) == {f"d{d}" for d in days[2:]} | {"future"}
        assert left["future"] == DECISIONS.default
        # a day's traces go with its decisions
        traces = await where(conn, "decision_traces")
        assert set(traces) == {f"t{d}" for d in days[2:]} | {"future"}
        # without a journal retention the journal keeps every day
        assert set(await where(conn, "stock_journal")) == {f"j{d}" for d in days}
        names = await partition_names(conn, "stock_journal")
        assert {JOURNAL.partition(d) for d in days} <= names


async def checkpointed(conn: AsyncConnection) -> tuple[int, set[str]]:
    """The journal checkpoint's folded entries and the refs of the reservations it holds."""
    entries = (await conn.execute(text("SELECT entries FROM stock_checkpoint"))).scalar_one()
    refs = await conn.execute(text("SELECT key FROM stock_checkpoint_items WHERE kind = 'resv'"))
    return int(entries), {str(ref) for (ref,) in refs}


async def test_the_journal_retention_folds_old_days_into_the_checkpoint_and_drops_them(
    pg: AsyncEngine,
) -> None:
    await upgrade(pg)
    days = [TODAY - timedelta(days=n) for n in (40, 31, 30, 29, 1)]
    async with pg.begin() as conn:
        for day in days:
            await add_journal(conn, at(day), f"j{day}")
        await add_journal(conn, at(date(2020, 1, 1)), "ancient")  # in the default partition
        await add_journal(conn, at(TODAY + timedelta(days=400)), "future")
    for day in days:
        await maintain(pg, day, ahead_days=0, retention_days=0)
    report = await maintain(pg, TODAY, ahead_days=7, retention_days=0, journal_retention_days=30)
    assert sorted(report.dropped) == sorted(JOURNAL.partition(d) for d in days[:2])
    assert (report.folded, report.trimmed) == (3, 1)
    async with pg.begin() as conn:
        left = await where(conn, "stock_journal")
        assert set(left) == {f"j{d}" for d in days[2:]} | {"future"}
        names = await partition_names(conn, "stock_journal")
        assert not {JOURNAL.partition(d) for d in days[:2]} & names
        assert {JOURNAL.partition(d) for d in days[2:]} <= names
        assert await checkpointed(conn) == (3, {f"j{d}" for d in days[:2]} | {"ancient"})
        # the decision log's partitions are left to its own retention
        assert {DECISIONS.partition(d) for d in days} <= await partition_names(conn, "decisions")
    again = await maintain(pg, TODAY, ahead_days=7, retention_days=0, journal_retention_days=30)
    assert (again.folded, again.dropped, again.trimmed) == (0, [], 0)


async def test_lookups_by_decision_id_and_order_id_read_one_days_index(pg: AsyncEngine) -> None:
    await upgrade(pg)
    for n in range(1, 4):
        await maintain(pg, TODAY - timedelta(days=n), ahead_days=0, retention_days=0)
    async with pg.begin() as conn:
        # 4 days of 5000 decisions each, made on the server
        await conn.execute(
            text(
                "INSERT INTO decisions (id, kind, created_at, subject, ruleset_name, ruleset_version, "
                "ruleset_sha256, request, decision, timings) "
                "SELECT gen_random_uuid()::text, 'allocation', "
                # the test's day, not the server's: a run across midnight would fill other days
                "CAST(:midnight AS timestamptz) - (g % 4) * interval '1 day' + (g % 1000) * interval '1 second', "
                "'ORDER-' || g, 'r', 1, 'x', '{}', '{}', '{}' FROM generate_series(1, 20000) g"
            ),
            {"midnight": at(TODAY, 0)},
        )
        wanted = await add_decision(conn, at(TODAY - timedelta(days=2), 3), "ORDER-WANTED")
        await conn.execute(text("ANALYZE decisions"))
    log = SqlDecisionLog(session_factory(pg))
    try:
        found = await log.get(wanted)
        assert found is not None and found["decision_id"] == wanted
        assert await log.get(str(uuid7(ms(at(TODAY))))) is None
    finally:
        await log.close()
    by_id = await explain(
        pg,
        "SELECT * FROM decisions WHERE id = :id AND created_at >= :lo AND created_at < :hi",
        {"id": wanted, "lo": at(TODAY - timedelta(days=3)), "hi": at(TODAY - timedelta(days=1))},
    )
    assert "Index" in by_id and not seq_scans(by_id, TODAY), by_id
    assert DECISIONS.partition(TODAY) not in by_id, by_id  # pruned to the days the id names
    by_order = await explain(pg, "SELECT * FROM decisions WHERE subject = :s", {"s": "ORDER-WANTED"})
    assert "subject_created_at" in by_order and not seq_scans(by_order, TODAY), by_order


def seq_scans(plan: str, today: date) -> list[str]:
    """The plan's sequential scans of the partitions holding rows (days today-3 .. today); the planner
    may scan an empty partition from end to end, it costs nothing."""
    full = {DECISIONS.partition(today - timedelta(days=n)) for n in range(4)}
    return [line for line in plan.splitlines() if "Seq Scan" in line and any(p in line for p in full)]


async def explain(engine: AsyncEngine, sql: str, params: dict[str, Any]) -> str:
    async with engine.connect() as conn:
        rows = await conn.execute(text(f"EXPLAIN {sql}"), params)
        return "\n".join(str(row[0]) for row in rows)


async def test_a_decision_logged_far_from_its_ids_moment_is_still_found(pg: AsyncEngine) -> None:
    await upgrade(pg)
    sessions = session_factory(pg)
    log = SqlDecisionLog(sessions)
    decision_id = str(uuid7())
    record = DecisionRecord(
        id=decision_id,
        kind="allocation",
        created_at=at(date(2025, 6, 1)),  # a controllable clock far from the wall clock
        request={},
        decision={"status": "ok"},
        ruleset={"name": "r", "version": 1, "sha256": "x"},
        trace=None,
        timings={},
        subject="ORDER-1",
    )
    try:
        await log.record(record)
        await log.flush()
        found = await log.get(decision_id)
    finally:
        await log.close()
    assert found is not None and found["created_at"] == record.created_at.isoformat()


async def test_sqlite_keeps_plain_tables_with_the_order_id_index(migrated_sqlite_url: str) -> None:
    engine = create_engine(DatabaseSettings(url=migrated_sqlite_url))
    try:
        assert (await maintain(engine, TODAY, 7, 30)).created == []
        async with engine.connect() as conn:
            indexes = await conn.execute(text("SELECT name FROM sqlite_master WHERE tbl_name = 'decisions'"))
            assert "ix_decisions_subject_created_at" in {row[0] for row in indexes}
    finally:
        await engine.dispose()


def run_partitions(
    database_url: str, tmp_path: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "db", "partitions", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": database_url, "RETAIL_POLICY_VAR": str(tmp_path), **env},
        timeout=120,
        check=False,
    )


async def test_the_partitions_command_makes_days_ahead_and_applies_the_retention(
    pg: AsyncEngine, postgres_server_database: str, tmp_path: Path
) -> None:
    await upgrade(pg)
    async with pg.begin() as conn:
        await add_decision(conn, at(TODAY), "today")
        made = set().union(*[await partition_names(conn, s.table) for s in (DECISIONS, TRACES, JOURNAL)])
    before = datetime.now(UTC).date()
    done = await asyncio.to_thread(run_partitions, postgres_server_database, tmp_path, "--ahead-days", "9")
    after = datetime.now(UTC).date()  # the command read its own clock in between (midnight may pass)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["partitioned"] is True
    # the migration made its today and the next week: the command adds what is missing up to 9 days ahead
    assert set(report["created"]) in [
        {s.partition(day + timedelta(days=n)) for s in (DECISIONS, TRACES, JOURNAL) for n in range(10)} - made
        for day in (before, after)
    ]
    # the retention from the environment: today's decisions stay, nothing older exists
    kept = await asyncio.to_thread(
        run_partitions, postgres_server_database, tmp_path, DECISION_LOG_RETENTION_DAYS="1"
    )
    assert kept.returncode == 0 and json.loads(kept.stdout)["dropped"] == [], kept.stderr
    async with pg.begin() as conn:
        assert set(await where(conn, "decisions")) == {"today"}


async def test_the_partitions_command_folds_the_journals_old_days_with_its_retention_flag(
    pg: AsyncEngine, postgres_server_database: str, tmp_path: Path
) -> None:
    await upgrade(pg)
    old = TODAY - timedelta(days=3)
    await maintain(pg, old, ahead_days=0, retention_days=0)
    async with pg.begin() as conn:
        await add_journal(conn, at(old), "j-old")
        await add_journal(conn, at(TODAY), "j-today")
    kept = await asyncio.to_thread(run_partitions, postgres_server_database, tmp_path)
    assert kept.returncode == 0 and json.loads(kept.stdout)["folded"] == 0, kept.stderr
    done = await asyncio.to_thread(
        run_partitions, postgres_server_database, tmp_path, "--journal-retention-days", "2"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["folded"], report["dropped"]) == (1, [JOURNAL.partition(old)])
    async with pg.begin() as conn:
        assert set(await where(conn, "stock_journal")) == {"j-today"}
        assert await checkpointed(conn) == (1, {"j-old"})


def test_the_partitions_command_on_sqlite_and_a_bad_retention(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    done = run_partitions(url, tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout) == {"partitioned": False}, done.stderr
    bad = run_partitions(url, tmp_path, DECISION_LOG_RETENTION_DAYS="-3")
    assert bad.returncode == 2 and "DECISION_LOG_RETENTION_DAYS" in bad.stderr, bad.stderr
    bad = run_partitions(url, tmp_path, JOURNAL_RETENTION_DAYS="-1")
    assert bad.returncode == 2 and "JOURNAL_RETENTION_DAYS" in bad.stderr, bad.stderr
    flag = run_partitions(url, tmp_path, "--journal-retention-days", "-1")
    assert flag.returncode == 2 and "--journal-retention-days" in flag.stderr, flag.stderr


def test_the_partitions_command_on_sqlite_folds_and_deletes_the_journals_old_days(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    assert run_partitions(url, tmp_path).returncode == 0  # migrated
    with sqlite3.connect(tmp_path / "cli.db") as db:
        for ref, moment in (("j-old", at(TODAY - timedelta(days=3))), ("j-today", at(TODAY))):
            db.execute(
                "INSERT INTO stock_journal (at_ms, kind, ref, deltas) VALUES (?, 'reserve', ?, '[]')",
                (ms(moment), ref),
            )
    done = run_partitions(url, tmp_path, JOURNAL_RETENTION_DAYS="2")
    assert done.returncode == 0 and json.loads(done.stdout) == {"partitioned": False, "folded": 1}, (
        done.stderr
    )
    with sqlite3.connect(tmp_path / "cli.db") as db:
        assert [ref for (ref,) in db.execute("SELECT ref FROM stock_journal")] == ["j-today"]
        assert db.execute("SELECT entries FROM stock_checkpoint").fetchone() == (1,)


async def test_sqlite_folds_a_long_journal_in_a_transaction_per_chunk(migrated_sqlite_url: str) -> None:
    """Each transaction folds CHUNK rows (SQLite's writers get the lock between them); together they give
    the fold of the whole journal."""
    import sqlite3

    from service.stock.checkpoint import read_state
    from service.stock.fold import CHUNK

    old, rows = ms(at(TODAY - timedelta(days=3))), CHUNK * 2 + 7
    with sqlite3.connect(migrated_sqlite_url.removeprefix("sqlite+aiosqlite:///")) as db:
        db.executemany(
            "INSERT INTO stock_journal (at_ms, kind, ref, deltas, record) VALUES (?, 'event', ?, ?, ?)",
            [
                (
                    old + n,
                    f"e{n}",
                    f'[["SKU{n % 50}", "S1", 1, 0, 0, 0, 0]]',
                    f'{{"sku": "SKU{n % 50}", "seq": {n}}}',
                )
                for n in range(rows)
            ],
        )
    engine = create_engine(DatabaseSettings(url=migrated_sqlite_url))
    try:
        whole = await read_state(engine)
        report = await maintain(engine, TODAY, 0, 0, journal_retention_days=1)
        assert (report.folded, report.trimmed) == (rows, rows)
        checkpointed = await read_state(engine)
        assert checkpointed.fold == whole.fold
        assert (checkpointed.checkpoint_entries, checkpointed.journal_entries, checkpointed.generation) == (
            rows,
            0,
            3,
        )
    finally:
        await engine.dispose()
