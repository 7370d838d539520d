"""Approvals: approve-and-execute throughput over `POST /v1/reservations`, and the inbox query's latency.

1. The service runs as an operator runs it, `retail-policy serve --workers N` (uvicorn with httptools and
   uvloop; N = 1 and 2, or as BENCH_WORKERS lists them, e.g. `BENCH_WORKERS=2`). Pending transfer cases
   are seeded in the database; a separate load process keeps a fixed number of keep-alive connections busy
   approving them (`POST /v1/approvals/{id}/approve`: the approval, the floor re-check on live stock,
   the `transfer_out` event and the `executed` transition) and, alternately, reserving
   (`POST /v1/reservations`). The ratio of the mean request rates is reported from that one run, with the
   CPU per request of the server (its processes), of Redis (INFO) and of PostgreSQL's processes (/proc).
   With one worker the ratio is about that of the worker's CPU per request (it is the busy process); with
   two, the workers, Redis, PostgreSQL and the load process share the machine's two cores.
2. 100,000 open cases on PostgreSQL: the inbox query (by role, first and deeper pages; overdue; all
   roles) is timed in-process, and its p50 and p99 reported.

Run with `pytest tests/benchmarks/bench_approvals.py -o python_files='bench_*.py' -s`.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from tests.benchmarks.bench_operator import postgres_cpu, tree_cpu
from tests.benchmarks.bench_reservations import ROOT, run_load
from tests.e2e.stock_server import _migrate_and_key
from tests.server import running_server

CONNECTIONS = 32
SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WORKERS = [int(n) for n in os.environ.get("BENCH_WORKERS", "1,2").split(",")]
CASES_PER_CONNECTION = 1000  # per round: more than one connection approves in SECONDS (~100 a second today)
INBOX_CASES = 100_000


# ---- seeding cases straight into the database -------------------------------------------------------


def _case_rows(
    n: int, prefix: str, start: datetime, sku: str = "BENCH", source: str = "L0", destination: str = "L1"
) -> tuple[list[dict[str, Any]], ...]:
    requests, cases, roles = [], [], []
    for i in range(n):
        case_id = f"{prefix}-{i:07d}"
        subject = f"transfer:{case_id}"
        created = start + timedelta(milliseconds=i)
        body = {
            "transfer_id": case_id,
            "sku": sku,
            "qty": 1,
            "from_location": source,
            "to_location": destination,
            "requested_by": {"id": "req", "role": "store_associate"},
            "reason": "",
        }
        decision = {"outcome": "route", "approvers": ["store_manager"], "sla_hours": 24}
        requests.append(
            {
                "id": subject,
                "kind": "transfer",
                "request_id": case_id,
                "fingerprint": "0" * 64,
                "body": body,
                "requested_by": "requester",
                "decision": {"decision": decision},
                "outcome": "route",
                "case_id": case_id,
                "approval": "any",
                "shipment_id": None,
                "created_at": created,
            }
        )
        cases.append(
            {
                "id": case_id,
                "kind": "transfer" if i % 4 else "markdown",
                "subject": subject,
                "requested_by": "requester",
                "decision_id": case_id,
                "status": "pending",
                "approvers": ["store_manager"] if i % 3 else ["district_manager"],
                "approvals_required": 1,
                "escalation": ["regional_manager"],
                "escalation_level": 0,
                "sla_hours": 24.0,
                "sla_due_at": created + timedelta(hours=24 if i % 10 else -1),
                "created_at": created,
                "updated_at": created,
                "closed_at": None,
                "outcome_reason": None,
                "version": 0,
            }
        )
        for role in cases[-1]["approvers"]:
            roles.append(
                {
                    "case_id": case_id,
                    "role": role,
                    "status": "pending",
                    "kind": cases[-1]["kind"],
                    "created_at": created,
                }
            )
    return requests, cases, roles


async def seed_cases(
    url: str,
    n: int,
    prefix: str,
    transfers_only: bool = False,
    move: tuple[str, str, str] = ("BENCH", "L0", "L1"),
) -> list[str]:
    from sqlalchemy import insert

    from service.db.engine import create_engine
    from service.db.models import ApprovalCase, ApprovalCaseRole, ChangeRequest
    from service.settings import DatabaseSettings

    requests, cases, roles = _case_rows(n, prefix, datetime.now(UTC), *move)
    if transfers_only:  # and none overdue: the server's sweeper would escalate them under the load
        for case in cases:
            case["kind"], case["approvers"] = "transfer", ["store_manager"]
            case["sla_due_at"] = case["created_at"] + timedelta(hours=24)
        roles = [{**r, "role": "store_manager", "kind": "transfer"} for r in roles]
    engine = create_engine(DatabaseSettings(url=url))
    try:
        for start in range(0, n, 5000):
            async with engine.begin() as conn:
                await conn.execute(insert(ChangeRequest), requests[start : start + 5000])
                await conn.execute(insert(ApprovalCase), cases[start : start + 5000])
                await conn.execute(insert(ApprovalCaseRole), roles[start : start + 5000])
    finally:
        await engine.dispose()
    return [case["id"] for case in cases]


async def _approver_key(url: str) -> str:
    from service.db.engine import create_engine, session_factory
    from service.security.keys import create_key
    from service.settings import DatabaseSettings

    engine = create_engine(DatabaseSettings(url=url))
    try:
        return await create_key(session_factory(engine), "bench-approver", ["store_manager"])
    finally:
        await engine.dispose()


# ---- the load process: every request approves another case -----------------------------------------


async def _approving(
    host: str, port: int, key: str, ids: list[str], stop_at: float, counts: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    for case_id in ids:
        if time.perf_counter() >= stop_at:
            break
        writer.write(
            f"POST /v1/approvals/{case_id}/approve HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        counts[status] = counts.get(status, 0) + 1
    else:
        counts[-1] = counts.get(-1, 0) + 1  # this connection ran out of cases before the time was up
    writer.close()


async def _approve_load(base: str, key: str, ids: list[str], seconds: float) -> dict[str, Any]:
    host, port = base.removeprefix("http://").split(":")
    counts: dict[int, int] = {}
    per = len(ids) // CONNECTIONS
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _approving(host, int(port), key, ids[c * per : (c + 1) * per], started + seconds, counts)
            for c in range(CONNECTIONS)
        )
    )
    elapsed = time.perf_counter() - started
    ran_out = counts.pop(-1, 0)
    return {"rps": sum(counts.values()) / elapsed, "statuses": counts, "ran_out": ran_out}


def run_approvals(
    base: str, key: str, ids: list[str], tmp_path: Path, seconds: float = SECONDS
) -> dict[str, Any]:
    listed = tmp_path / "case-ids.json"
    listed.write_text(json.dumps(ids))
    done = subprocess.run(
        [sys.executable, __file__, base, key, str(listed), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
        cwd=ROOT,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def server_pid(base: str) -> int:
    """The pid of the process started to serve `base` (`--port` on its command line): one worker serves in
    it, several are its children."""
    port = base.rsplit(":", 1)[1].encode()
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0") if proc.name.isdigit() else []
        except (FileNotFoundError, PermissionError):
            continue
        if b"--port" in args and args[args.index(b"--port") + 1] == port:
            return int(proc.name)
    raise LookupError(f"no process serving {base}")


def with_cpu(pid: int, run: Any, redis_cpu: Any = None) -> dict[str, Any]:
    """`run()`'s result with CPU seconds per request over it (user plus system): the server's (`cpu`),
    PostgreSQL's processes' (`postgres_cpu`) and, given `redis_cpu` (a callable reading the Redis server's
    CPU seconds from INFO), Redis's (`redis_cpu`)."""
    before, postgres, redis_before = tree_cpu(pid), postgres_cpu(), redis_cpu() if redis_cpu else 0.0
    result: dict[str, Any] = run()
    requests = max(1, sum(result["statuses"].values()))
    result["cpu"] = (tree_cpu(pid) - before) / requests
    result["postgres_cpu"] = (postgres_cpu() - postgres) / requests
    result["redis_cpu"] = ((redis_cpu() - redis_before) / requests) if redis_cpu else 0.0
    return result


# ---- the measurements -------------------------------------------------------------------------------


@pytest.mark.benchmark
@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize(
    ("database", "backend"), [("sqlite", "sql"), ("sqlite", "redis"), ("postgresql", "redis")]
)
def test_approve_and_execute_throughput_over_reservations(
    database: str,
    backend: str,
    workers: int,
    tmp_path: Path,
    redis_server_url: str,
    request: pytest.FixtureRequest,
) -> None:
    import httpx
    import redis

    from tests.conftest import _reset_postgres

    redis.Redis.from_url(redis_server_url).flushdb()
    url = f"sqlite+aiosqlite:///{tmp_path / 'bench.db'}"
    if database == "postgresql":
        url = request.getfixturevalue("postgres_server_database")
        asyncio.run(_reset_postgres(url))
    env = {"DATABASE_URL": url, "STOCK_BACKEND": backend, "AUTO_MIGRATE": "0"}
    if backend == "redis":
        env["REDIS_URL"] = redis_server_url
    key = asyncio.run(_migrate_and_key(url, reset_postgres=False))
    with running_server(tmp_path, env=env, workers=workers) as base:
        headers = {"Authorization": f"Bearer {key}"}
        locations = [
            {"id": f"L{i}", "type": "dc" if i == 0 else "store", "region": "north", "lat": 53.4, "lon": -2.2}
            for i in range(3)
        ]
        item = {
            "sku": "BENCH",
            "category": "bench",
            "price": 10.0,
            "cost": 5.0,
            "case_pack": 1,
            "lead_time_days": 1,
        }
        for path, rows in (("/v1/locations", locations), ("/v1/items", [item])):
            assert httpx.put(f"{base}{path}", json=rows, headers=headers, timeout=10).status_code == 200
        rows = [{"sku": "BENCH", "location": f"L{i}", "sellable": 100_000_000} for i in range(3)]
        assert httpx.put(f"{base}/v1/stock", json=rows, headers=headers, timeout=10).status_code == 200
        approver = asyncio.run(_approver_key(url))
        batches = [
            asyncio.run(seed_cases(url, CONNECTIONS * CASES_PER_CONNECTION, f"b{r}", transfers_only=True))
            for r in range(ROUNDS + 1)
        ]
        run_approvals(base, approver, batches[0], tmp_path, 1.0)
        run_load(base, "/v1/reservations", key, "warm", 1.0)
        pid = server_pid(base)
        info = redis.Redis.from_url(redis_server_url)

        def redis_cpu() -> float:
            cpu = info.info("cpu")
            return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

        ours, theirs = [], []
        for round_ in range(ROUNDS):
            ids = batches[round_ + 1]
            ours.append(
                with_cpu(pid, lambda ids=ids: run_approvals(base, approver, ids, tmp_path), redis_cpu)
            )
            theirs.append(
                with_cpu(
                    pid,
                    lambda r=round_: run_load(base, "/v1/reservations", key, f"run{r}", SECONDS),
                    redis_cpu,
                )
            )
    assert all(set(o["statuses"]) == {"200"} for o in ours), ours
    assert all(o["ran_out"] == 0 for o in ours), "seed more cases per connection"
    assert all(set(t["statuses"]) == {"201"} for t in theirs)
    ours_rps = sum(o["rps"] for o in ours) / ROUNDS
    theirs_rps = sum(t["rps"] for t in theirs) / ROUNDS
    ours_cpu = statistics.median(o["cpu"] for o in ours) * 1e3
    theirs_cpu = statistics.median(t["cpu"] for t in theirs) * 1e3

    def others(runs: list[dict[str, Any]]) -> str:
        redis_us = statistics.median(r["redis_cpu"] for r in runs) * 1e6
        return f"Redis {redis_us:.0f} µs, PostgreSQL {statistics.median(r['postgres_cpu'] for r in runs) * 1e6:.0f} µs"

    print(
        f"\napprove-and-execute ({backend} stock, cases on {database}): {ours_rps:.0f} req/s; reservations: "
        f"{theirs_rps:.0f} req/s; ratio {ours_rps / theirs_rps:.2f} (rounds: "
        + ", ".join(f"{o['rps'] / t['rps']:.2f}" for o, t in zip(ours, theirs, strict=True))
        + f"; {CONNECTIONS} connections, {ROUNDS} x {SECONDS:.0f} s each, {workers} worker(s)); server CPU per "
        f"request (median of rounds): approval {ours_cpu:.2f} ms, reservation {theirs_cpu:.2f} ms, "
        f"ratio {theirs_cpu / ours_cpu:.2f}; beside the server, per approval {others(ours)}, per "
        f"reservation {others(theirs)}"
    )


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


@pytest.mark.benchmark
async def test_inbox_query_with_100k_open_cases_on_postgresql(postgres_server_database: str) -> None:
    from service.db.engine import create_engine, session_factory
    from service.db.migrate import upgrade
    from service.settings import DatabaseSettings
    from service.workflow.cases import Workflow
    from service.workflow.inbox import inbox
    from tests.conftest import _reset_postgres

    url = postgres_server_database
    await _reset_postgres(url)
    engine = create_engine(DatabaseSettings(url=url))
    await upgrade(engine)
    await seed_cases(url, INBOX_CASES, "c")
    async with engine.begin() as conn:
        await conn.exec_driver_sql("ANALYZE")
    workflow = Workflow(cast(Any, SimpleNamespace(engine=engine, sessions=session_factory(engine))))
    shapes: dict[str, list[float]] = {
        "role, first page": [],
        "role, deep pages": [],
        "overdue": [],
        "all roles": [],
    }
    try:
        for _ in range(3):  # warm the pool and the plans
            await inbox(
                workflow,
                role="store_manager",
                status="pending",
                overdue=None,
                kind=None,
                limit=50,
                cursor=None,
            )
        for _ in range(200):
            started = time.perf_counter()
            await inbox(
                workflow,
                role="store_manager",
                status="pending",
                overdue=None,
                kind=None,
                limit=50,
                cursor=None,
            )
            shapes["role, first page"].append(time.perf_counter() - started)
        cursor = None
        for _ in range(200):
            started = time.perf_counter()
            page = await inbox(
                workflow,
                role="store_manager",
                status="pending",
                overdue=None,
                kind="transfer",
                limit=50,
                cursor=cursor,
            )
            shapes["role, deep pages"].append(time.perf_counter() - started)
            cursor = page["next_cursor"]
        for _ in range(200):
            started = time.perf_counter()
            await inbox(
                workflow,
                role="district_manager",
                status="pending",
                overdue=True,
                kind=None,
                limit=50,
                cursor=None,
            )
            shapes["overdue"].append(time.perf_counter() - started)
        for _ in range(200):
            started = time.perf_counter()
            await inbox(workflow, role=None, status="pending", overdue=None, kind=None, limit=50, cursor=None)
            shapes["all roles"].append(time.perf_counter() - started)
    finally:
        await engine.dispose()
    print(f"\ninbox over {INBOX_CASES:,} open cases on PostgreSQL, 50 per page, 200 queries each:")
    for shape, samples in shapes.items():
        p50, p99 = _percentiles(samples)
        print(f"  {shape}: p50 {p50:.2f} ms, p99 {p99:.2f} ms")


if __name__ == "__main__":
    base_url, api_key, ids_file, duration = sys.argv[1:5]
    case_ids = json.loads(Path(ids_file).read_text())
    print(json.dumps(asyncio.run(_approve_load(base_url, api_key, case_ids, float(duration)))))
