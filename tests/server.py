"""Run the real service (`retail-policy serve`) as a subprocess on a free loopback port, for e2e tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.services import free_port


@contextmanager
def running_server(
    workdir: Path,
    env: dict[str, str] | None = None,
    workers: int = 1,
    demo: bool = False,
    timeout: float = 60.0,
) -> Iterator[str]:
    """Start the service in `workdir` (its var/ lives there) and yield its base URL once it is ready."""
    port = free_port()
    full_env = {
        **os.environ,
        "RETAIL_POLICY_VAR": str(workdir / "var"),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    full_env.setdefault("DATABASE_URL", f"sqlite+aiosqlite:///{workdir / 'var' / 'service.db'}")
    args = [
        sys.executable,
        "-m",
        "service",
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
    ]
    if demo:
        args.append("--demo")
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 (closed in finally)
    process = subprocess.Popen(
        args, env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"service exited with {process.returncode}:\n{(workdir / 'server.log').read_text()}"
                )
            try:
                if httpx.get(f"{base}/health/ready", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"service not ready after {timeout}s:\n{(workdir / 'server.log').read_text()}"
                )
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
