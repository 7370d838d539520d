"""Real backing services for tests: a Redis server and PostgreSQL databases on loopback.

Redis: `TEST_REDIS_URL` if set; else the server on 127.0.0.1:6379 with a dedicated database number
(`TEST_REDIS_DB`, default 9); else a `redis-server` started on a free loopback port for the session.
PostgreSQL: `TEST_POSTGRES_URL` (a server URL without database) or postgres@127.0.0.1:5432; every test
session creates its own database and drops it at the end. When a service cannot be reached, tests that
need it are skipped with the reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import socket
import subprocess
import tempfile
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
    db = int(os.environ.get("TEST_REDIS_DB", "9"))
    if redis_answers("127.0.0.1", 6379):
        yield f"redis://127.0.0.1:6379/{db}", None
        return
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
