"""Real backing services for tests: a Redis server and PostgreSQL databases on loopback.

Redis: `TEST_REDIS_URL` if set; else the server on 127.0.0.1:6379 with a database of the session's own
(`TEST_REDIS_DB`, or the first empty database that no other session has claimed); else a `redis-server`
started on a free loopback port for the session. Claims are keys with a short TTL in database 0, renewed
while the session runs, so two suites on one machine never share (or flush) each other's database.
PostgreSQL: `TEST_POSTGRES_URL` (a server URL without database) or postgres@127.0.0.1:5432; every test
session creates its own databases (a migrated template and the database each test gets a fresh clone of)
and drops them at the end. When a service cannot be reached, tests that
need it are skipped with the reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: tests that need this service must run)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes] | None]]:
    """Yield (url, process) of a Redis to test against; process is None when it is not ours."""
    explicit = os.environ.get("TEST_REDIS_URL")
    if explicit:
        yield explicit, None
        return
    if redis_answers("127.0.0.1", 6379):
        with claimed_database("127.0.0.1", 6379, os.environ.get("TEST_REDIS_DB")) as db:
            yield f"redis://127.0.0.1:6379/{db}", None
        return
    db = int(os.environ.get("TEST_REDIS_DB", "9"))
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("no Redis on 127.0.0.1:6379 and no redis-server binary (make test installs one)")
    with tempfile.TemporaryDirectory() as workdir:
        process, port = start_redis(binary, workdir)  # type: ignore[arg-type]
        try:
            yield f"redis://127.0.0.1:{port}/{db}", process
        finally:
            process.terminate()
            process.wait(10)


CLAIM_PREFIX = "retail-policy:test-session:db"
CLAIM_SECONDS = 120
# Databases 4 and 7 are the benchmarks' (docs/benchmarks.md); 0 holds the claims.
CANDIDATE_DATABASES = (9, 10, 11, 12, 13, 14, 15, 1, 2, 3, 5, 6, 8)


@contextmanager
def claimed_database(host: str, port: int, explicit: str | None) -> Iterator[int]:
    """A database number of this test session's own on a shared server, held by a renewed claim.

    Without `explicit`, the first candidate that is unclaimed and empty is taken; the session may then
    flush it, since everything in it was written by the session. It is flushed once more at the end."""
    import redis

    token = uuid.uuid4().hex
    claims = redis.Redis(host=host, port=port, db=0)
    chosen: int | None = None
    if explicit is not None:
        chosen = int(explicit)
        claims.set(f"{CLAIM_PREFIX}{chosen}", token, ex=CLAIM_SECONDS)
    else:
        for db in CANDIDATE_DATABASES:
            key = f"{CLAIM_PREFIX}{db}"
            if not claims.set(key, token, nx=True, ex=CLAIM_SECONDS):
                continue
            if redis.Redis(host=host, port=port, db=db).dbsize() == 0:
                chosen = db
                break
            claims.delete(key)  # holds data of someone else's: leave it alone
        if chosen is None:
            unavailable(f"no free Redis database on {host}:{port} (all claimed or holding data)")
    assert chosen is not None
    key = f"{CLAIM_PREFIX}{chosen}"
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(CLAIM_SECONDS / 4):
            claims.set(key, token, ex=CLAIM_SECONDS)

    renewer = threading.Thread(target=renew, name="redis-test-claim", daemon=True)
    renewer.start()
    try:
        yield chosen
    finally:
        stop.set()
        renewer.join()
        redis.Redis(host=host, port=port, db=chosen).flushdb()
        if claims.get(key) == token.encode():
            claims.delete(key)
        claims.close()


def start_redis(binary: str, workdir: str, port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    port = port or free_port()
    process = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not redis_answers("127.0.0.1", port):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"redis-server did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    return process, port


def postgres_server_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")


def _psql_admin(sql: str) -> None:
    import asyncio

    import asyncpg

    base = postgres_server_url().replace("postgresql+asyncpg://", "postgresql://")

    async def run() -> None:
        conn = await asyncpg.connect(f"{base}/postgres", timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    # A fresh loop in a worker thread: this may be called from inside a running test loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create a fresh PostgreSQL database for one test session and drop it afterwards."""
    name = f"rp_test_{uuid.uuid4().hex[:12]}"
    try:
        _psql_admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # any connection failure means the server is not usable here
        unavailable(f"PostgreSQL at {postgres_server_url()} not reachable: {exc}")
    try:
        yield f"{postgres_server_url()}/{name}"
    finally:
        _psql_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def clone_postgres_database(template_url: str, url: str) -> None:
    """Replace the database at `url` by a copy of the one at `template_url` (which nobody may be using)."""
    name, template = database_name(url), database_name(template_url)
    _psql_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _psql_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
