"""The decision endpoints as an operator runs them, against a bare Litestar app served the same way.

For each HTTP server `retail-policy serve` offers (granian and uvicorn with httptools and uvloop; set
BENCH_SERVERS to pick), two things run side by side on loopback:

- the service: `retail-policy serve --workers 2 --server <name>` with Redis stock (a claimed database of
  its own), the journal and decision log in SQLite (or, with BENCH_DATABASE=postgresql, in a fresh
  PostgreSQL database), durable_rules and the shipped rulesets;
- the bare app: the two bare endpoints of `decisions_server.py` alone in a Litestar app, served by the same
  `service.cli.run_server` with the same server and worker count.

wrk (an external load generator: `apt-get install wrk`, done by `scripts/bootstrap.sh --test`) keeps 32
connections busy for `BENCH_PHASE_SECONDS` (default 3) per phase; every round runs every phase of every
server in turn (bare, ours at the default trace level, ours with trace=none, ...), so the machine's other
work falls on all alike; a ratio is that of the mean rates over the rounds. Measured:

- availability for 10 SKUs x 20 locations over the bare decode+encode endpoint;
- allocation with reserve (3 lines, 20 candidate locations, every order new) over the bare one-EVALSHA one;
- a reservation (one line, every one new) over the bare one-EVALSHA one;
- a reservation of three lines of the allocation's SKUs (every one new) over the same: the reservation an
  allocation with reserve makes, alone, which bounds allocation's ratio from above (an allocation also
  reads the stock, evaluates its ruleset, plans and logs the decision);

and per server the requests per CPU-second of the server's processes (its parent and workers, from /proc),
and p50/p99 of each endpoint at the default trace level at half its measured maximum rate (the open-loop
client of open_loop_client.py, a process of its own on uvloop, 16 connections, `BENCH_LATENCY_SECONDS`
per endpoint, default 4), the share of answers over 10 ms and the slowest, with how many of those
connections each worker holds and, per process (client, Redis, each worker), the share of the time it ran
and the share it waited for a CPU, and the machine's (its CPUs' busy and stolen shares, PostgreSQL's CPU).
Without wrk the benchmark is skipped, except under CI. BENCH_ONLY (phase names, comma-separated, e.g.
`reservation,bare_evalsha`) runs those phases alone and reports their rates, the ratios among them and
their latencies: a quicker look at one endpoint.
Run: `make bench`, or `PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_operator.py` (prints JSON).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.cli import SERVERS
from tests.benchmarks.bench_decisions import (
    AVAILABILITY_BODY,
    EVALSHA_BODY,
    ROOT,
    allocation_body,
    prepare_app,
    request_bytes,
    seed,
)
from tests.benchmarks.open_loop_client import open_loop
from tests.server import running_server
from tests.services import claimed_database, free_port, postgres_database

SERVER_NAMES = tuple(os.environ.get("BENCH_SERVERS", ",".join(SERVERS)).split(","))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
PHASE_SECONDS = int(os.environ.get("BENCH_PHASE_SECONDS", "3"))
# seconds of each latency phase: a p99 over 4 s rests on the slowest 1 % of a few thousand answers, which one
# stall of a few tens of milliseconds fills; longer phases give steadier figures
LATENCY_SECONDS = float(os.environ.get("BENCH_LATENCY_SECONDS", "4"))
CONNECTIONS = 32
WORKERS = 2
# where the service keeps its journal and decision log: sqlite (a file) or postgresql (a fresh database)
DATABASE = os.environ.get("BENCH_DATABASE", "sqlite")

# `@N@` in a body becomes a request id unique in the run, `@Sk@` the SKU number (counter + k) % 10
ALLOCATION_TEMPLATE = json.dumps(
    {
        **allocation_body(0),
        "order_id": "o-@N@",
        "idempotency_key": "bench-@N@",
        "lines": [{"sku": f"HOT-@S{k}@", "qty": 1 + k} for k in range(3)],
    }
)
RESERVATION_TEMPLATE = json.dumps(
    {
        "order_id": "r-@N@",
        "channel": "ecommerce",
        "idempotency_key": "res-@N@",
        "lines": [{"sku": "HOT-@S0@", "location": "L05", "qty": 1}],
        "ttl_seconds": 3600,
    }
)
# three lines of the SKUs an allocation of ALLOCATION_TEMPLATE reserves, as a reservation of its own (from a
# store of their own: the one-line reservations take from L05)
RESERVATION_3_TEMPLATE = json.dumps(
    {
        **json.loads(RESERVATION_TEMPLATE),
        "order_id": "r3-@N@",
        "idempotency_key": "res3-@N@",
        "lines": [{"sku": f"HOT-@S{k}@", "location": "L19", "qty": 1 + k} for k in range(3)],
    }
)


@dataclass(frozen=True)
class Phase:
    name: str
    app: str  # "ours" or "bare"
    path: str
    body: str  # a template when it holds @N@


ALL_PHASES = (
    Phase("bare_availability", "bare", "/bare/availability", AVAILABILITY_BODY.decode()),
    Phase("availability", "ours", "/v1/decisions/availability", AVAILABILITY_BODY.decode()),
    Phase("availability_none", "ours", "/v1/decisions/availability?trace=none", AVAILABILITY_BODY.decode()),
    Phase("bare_evalsha", "bare", "/bare/evalsha", EVALSHA_BODY.decode()),
    Phase("allocation", "ours", "/v1/decisions/allocation", ALLOCATION_TEMPLATE),
    Phase("allocation_none", "ours", "/v1/decisions/allocation?trace=none", ALLOCATION_TEMPLATE),
    Phase("reservation", "ours", "/v1/reservations", RESERVATION_TEMPLATE),
    Phase("reservation_3", "ours", "/v1/reservations", RESERVATION_3_TEMPLATE),
)
_ONLY = os.environ.get("BENCH_ONLY")  # see the module
PHASES = tuple(p for p in ALL_PHASES if not _ONLY or p.name in _ONLY.split(","))
RATIOS = {
    "availability": ("availability", "bare_availability"),
    "availability_trace_none": ("availability_none", "bare_availability"),
    "allocation": ("allocation", "bare_evalsha"),
    "allocation_trace_none": ("allocation_none", "bare_evalsha"),
    "reservation": ("reservation", "bare_evalsha"),
    "reservation_3_lines": ("reservation_3", "bare_evalsha"),
}


def lua_script(phase: Phase, key: str) -> str:
    """A wrk script sending `phase`'s requests (ids made unique by the thread and the run label)."""
    headers = {"Content-Type": "application/json"}
    if phase.app == "ours":
        headers["Authorization"] = f"Bearer {key}"
    lua_headers = "{" + ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()) + "}"
    if "@N@" not in phase.body:
        return (
            f'wrk.method = "POST"\nwrk.path = {json.dumps(phase.path)}\nwrk.headers = {lua_headers}\n'
            f"wrk.body = {json.dumps(phase.body)}\n"
        )
    return f"""
local counter, id, threads = 0, "", 0
local template = {json.dumps(phase.body)}
local headers = {lua_headers}
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function init(args) id = args[1] .. "-" .. tostring(tid) end
function request()
  counter = counter + 1
  local body = template:gsub("@N@", id .. "-" .. counter):gsub("@S(%d)@", function(k)
    return tostring((counter + tonumber(k)) % 10)
  end)
  return wrk.format("POST", {json.dumps(phase.path)}, headers, body)
end
"""


def run_wrk(wrk: str, script: Path, port: int, label: str) -> tuple[float, int]:
    """(requests per second, non-2xx responses and socket errors) of one wrk phase."""
    out = subprocess.run(
        [
            wrk,
            "-t2",
            f"-c{CONNECTIONS}",
            f"-d{PHASE_SECONDS}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
            "--",
            label,
        ],
        capture_output=True,
        text=True,
        timeout=PHASE_SECONDS + 30,
        check=True,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rate, out
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, socket.groups())) if socket else 0)
    return float(rate.group(1)), errors


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by the process `pid` and its live descendants (user plus system)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


@contextmanager
def bare_server(tmp: Path, server: str, env: dict[str, str]) -> Iterator[tuple[int, int]]:
    """The bare app under `server` with WORKERS workers: (parent pid, port), once it answers."""
    port = free_port()
    log_path = tmp / f"bare-{server}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests/benchmarks/decisions_server.py"),
                str(port),
                server,
                str(WORKERS),
            ],
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                if process.poll() is not None or time.monotonic() > deadline:
                    state = f"exit code {process.returncode}" if process.poll() is not None else "no answer"
                    raise RuntimeError(f"bare app did not start ({state}):\n" + log_path.read_text())
                try:
                    httpx.post(f"http://127.0.0.1:{port}/bare/evalsha", content=EVALSHA_BODY, timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            yield process.pid, port
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@dataclass
class Served:
    server: str
    ours: tuple[int, int]  # (pid, port)
    bare: tuple[int, int]
    key: str
    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)  # server CPU seconds per request


def serve_pid(port: int) -> int:
    """The pid of the `serve` command listening on `port` (the parent of its workers)."""
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0") if proc.name.isdigit() else []
        except (FileNotFoundError, PermissionError):
            continue
        if b"serve" in args and b"--port" in args and args[args.index(b"--port") + 1] == str(port).encode():
            return int(proc.name)
    raise LookupError(f"no serve process on port {port}")


async def start(tmp: Path, server: str, stack: ExitStack) -> Served:
    db = stack.enter_context(claimed_database("127.0.0.1", 6379, None))
    work = tmp / server
    work.mkdir()
    database = stack.enter_context(postgres_database()) if DATABASE == "postgresql" else None
    env, key = await prepare_app(work, f"redis://127.0.0.1:6379/{db}", database_url=database)
    env["HTTP_SERVER"] = server
    base = stack.enter_context(running_server(work, env=env, workers=WORKERS))
    port = int(base.rsplit(":", 1)[1])
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
        await seed(c)
    bare = stack.enter_context(bare_server(work, server, env))
    return Served(server, (serve_pid(port), port), bare, key)


async def measure(tmp: Path, wrk: str) -> dict[str, Any]:
    with ExitStack() as stack:
        served = [await start(tmp, name, stack) for name in SERVER_NAMES]
        scripts: dict[tuple[str, str], Path] = {}
        for s in served:
            for phase in PHASES:
                path = tmp / f"{s.server}-{phase.name}.lua"
                path.write_text(lua_script(phase, s.key))
                scripts[s.server, phase.name] = path
        for s in served:  # warm-up: compiled rulesets, scripts, pools, master data in every worker
            for phase in PHASES:
                pid, port = s.bare if phase.app == "bare" else s.ours
                run_wrk(wrk, scripts[s.server, phase.name], port, f"warm-{s.server}-{phase.name}")
        for round_ in range(ROUNDS):
            for s in served:
                for phase in PHASES:
                    pid, port = s.bare if phase.app == "bare" else s.ours
                    before = tree_cpu(pid)
                    rate, errors = run_wrk(
                        wrk, scripts[s.server, phase.name], port, f"r{round_}-{s.server}-{phase.name}"
                    )
                    assert errors == 0, f"{s.server} {phase.name}: {errors} failed requests"
                    s.rates.setdefault(phase.name, []).append(rate)
                    s.cpu.setdefault(phase.name, []).append((tree_cpu(pid) - before) / (rate * PHASE_SECONDS))
        latencies = {s.server: await latency(s) for s in served}
    return {s.server: report(s, latencies[s.server]) for s in served}


LATENCY_PHASES = ("availability", "allocation", "reservation", "bare_availability", "bare_evalsha")


async def latency(s: Served) -> dict[str, Any]:
    """p50/p99 (ms) of each endpoint at the default trace level at half its measured maximum rate, and of the
    bare endpoints at half theirs (what the same server, machine and client give with nothing of ours)."""
    out: dict[str, Any] = {}
    redis_pid = int(redis.Redis(host="127.0.0.1", port=6379).info("server")["process_id"])
    phases = {phase.name: phase for phase in PHASES}
    for name in LATENCY_PHASES:
        if name not in phases:
            continue
        phase = phases[name]
        rate = statistics.mean(s.rates[name]) / 2
        pid, port = s.bare if phase.app == "bare" else s.ours

        def make(n: int, phase: Phase = phase) -> bytes:
            body = phase.body.replace("@N@", f"lat-{n}")
            for k in range(3):
                body = body.replace(f"@S{k}@", str((n + k) % 10))
            return request_bytes(phase.path, body.encode(), s.key)

        processes = {"redis": redis_pid}
        processes.update({f"worker-{worker}": worker for worker in children(pid)})
        machine_before, postgres_before = machine_cpu(), postgres_cpu()
        before, started = {k: schedstat(p) for k, p in processes.items()}, time.perf_counter()
        loop = asyncio.create_task(open_loop(port, make, rate, LATENCY_SECONDS))
        await asyncio.sleep(LATENCY_SECONDS / 2)
        connections = {k: connections_to(port, p) for k, p in processes.items() if k.startswith("worker")}
        client = await loop
        elapsed = time.perf_counter() - started
        machine_after, postgres_after = machine_cpu(), postgres_cpu()
        ticks = machine_after[0] - machine_before[0]
        values = sorted(client.latencies)
        out[name] = {
            "offered_rps": round(rate),
            "p50_ms": round(statistics.median(values), 2),
            "p99_ms": round(values[int(len(values) * 0.99) - 1], 2),
            # how many answers took longer than the goal's 10 ms (a share of all), and the slowest: one stall
            # makes few slow answers and a high maximum, a loaded server many
            "over_10ms": round(sum(v > 10 for v in values) / len(values), 4),
            "max_ms": round(values[-1], 1),
            # the client's connections held by each worker, and per process the share of the wall time it
            # ran on a CPU and the share it waited for one (runnable, on the run queue: the machine's cores
            # were busy with other processes)
            "connections": connections,
            "cpu": {
                k: {
                    "running": round((schedstat(p)[0] - before[k][0]) / elapsed, 3),
                    "waiting": round((schedstat(p)[1] - before[k][1]) / elapsed, 3),
                }
                for k, p in processes.items()
            }
            | {
                "client": {
                    "running": round(client.ran / elapsed, 3),
                    "waiting": round(client.waited / elapsed, 3),
                }
            },
            # the machine's CPUs: the share busy (all processes, ours or not) and the share the hypervisor
            # took (steal); and the CPU of every PostgreSQL process (in cores), whoever it serves
            "machine": {
                "busy": round((machine_after[1] - machine_before[1]) / ticks, 3) if ticks else 0.0,
                "steal": round((machine_after[2] - machine_before[2]) / ticks, 3) if ticks else 0.0,
                "postgres_cores": round((postgres_after - postgres_before) / elapsed, 3),
            },
        }
    return out


def children(pid: int) -> list[int]:
    """The worker processes of the `serve` command `pid` (not multiprocessing's resource tracker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


def schedstat(pid: int) -> tuple[float, float]:
    """Seconds the process `pid` has run on a CPU and waited on the run queue (its main thread's)."""
    try:
        ran, waited, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    except (FileNotFoundError, ValueError):
        return (0.0, 0.0)
    return int(ran) / 1e9, int(waited) / 1e9


def machine_cpu() -> tuple[int, int, int]:
    """Clock ticks of all CPUs so far: (total, busy, stolen by the hypervisor), from /proc/stat."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    busy = user + nice + system + irq + softirq + steal
    return busy + idle + iowait, busy, steal


def postgres_cpu() -> float:
    """CPU seconds used so far by the live processes named postgres (the server and its backends)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            head, fields = (proc / "stat").read_text().rsplit(")", 1)
        except (FileNotFoundError, ProcessLookupError):
            continue
        if head.endswith("(postgres"):
            values = fields.split()
            total += (int(values[11]) + int(values[12])) / os.sysconf("SC_CLK_TCK")
    return total


def connections_to(port: int, pid: int) -> int:
    """Established TCP connections on local `port` whose socket the process `pid` holds."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "01":
            inodes.add(fields[9])
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        held += target.startswith("socket:[") and target[8:-1] in inodes
    return held


def report(s: Served, latencies: dict[str, Any]) -> dict[str, Any]:
    def rate(name: str) -> float:
        return statistics.mean(s.rates[name])

    def cpu(name: str) -> float:
        return statistics.mean(s.cpu[name])

    ratios = {label: pair for label, pair in RATIOS.items() if all(name in s.rates for name in pair)}
    if _ONLY:
        return {
            "ratios": {label: round(rate(ours) / rate(bare), 3) for label, (ours, bare) in ratios.items()},
            "rps": s.rates,
            "latency_at_half_rate": latencies,
        }

    return {
        # `cpu_ratio`: the bare endpoint's server CPU time per request over ours (what the ratio would be if
        # both were bound by the server's CPU alone; less disturbed by other work on the machine)
        "ratios": {
            label: {
                "ratio": round(rate(ours) / rate(bare), 3),
                "rounds": [round(o / b, 3) for o, b in zip(s.rates[ours], s.rates[bare], strict=True)],
                "cpu_ratio": round(cpu(bare) / cpu(ours), 3),
            }
            for label, (ours, bare) in ratios.items()
        },
        # the default trace level over trace=none: by rate, per round, and by server CPU time per request
        "trace_cost": {
            kind: {
                "ratio": round(rate(f"{kind}_none") / rate(kind), 3),
                "rounds": [
                    round(n / t, 3) for n, t in zip(s.rates[f"{kind}_none"], s.rates[kind], strict=True)
                ],
                "cpu_ratio": round(cpu(kind) / cpu(f"{kind}_none"), 3),
            }
            for kind in ("availability", "allocation")
        },
        "rps": {name: [round(r) for r in rates] for name, rates in s.rates.items()},
        # requests per CPU-second of the server's processes (one core fully busy = this many per second)
        "rps_per_core": {name: round(1 / statistics.mean(c)) for name, c in s.cpu.items()},
        "latency_at_half_rate": latencies,
    }


@pytest.mark.benchmark
def test_operator_endpoints_against_bare_app(tmp_path: Path) -> None:
    wrk = shutil.which("wrk")
    if wrk is None:
        if os.environ.get("CI"):
            pytest.fail("wrk is missing: scripts/bootstrap.sh --test installs it")
        pytest.skip("wrk is not installed (scripts/bootstrap.sh --test installs it)")
    results = asyncio.run(measure(tmp_path, wrk))
    print()
    print(json.dumps(results, indent=1))
    for figures in results.values():
        assert all(r["ratio"] > 0 for r in figures["ratios"].values())


if __name__ == "__main__":
    import tempfile

    found = shutil.which("wrk")
    if found is None:
        sys.exit("wrk is not installed (scripts/bootstrap.sh --test installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(measure(Path(tmp), found)), indent=2))
