"""The `stock` fixture: the same tests run against every StockStore backend; `private_redis`: a Redis of a
test's own."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.stock.store import StockStore
from tests.contract.stock_backends import BACKENDS, FakeClock, open_backend
from tests.services import start_redis, unavailable


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=[*BACKENDS, "redis+postgresql"])
async def stock(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[StockStore]:
    async with open_backend(request.param, request, clock) as store:
        yield store


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own: its command statistics count this test's commands only."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not installed")
    process, port = start_redis(binary, str(tmp_path))  # type: ignore[arg-type]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)
