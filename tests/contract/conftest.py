"""The `stock` fixture: the same tests run against every StockStore backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any

import pytest

from service.stock.cluster import CrossSlotUnsupported
from service.stock.store import StockStore
from tests.contract.stock_backends import BACKENDS, FakeClock, open_backend

CROSS_SLOT = "cross-slot requests are not supported on a Redis Cluster yet (service/stock/cluster.py)"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=[*BACKENDS, "redis+postgresql"])
async def stock(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[StockStore]:
    async with open_backend(request.param, request, clock) as store:
        yield store


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """On the cluster backend, a test that met the store's refusal of a cross-slot request reports as an
    expected failure naming it (the store refuses before changing anything): every other failure stays
    a failure."""
    outcome = yield
    report = outcome.get_result()
    if (
        call.when == "call"
        and call.excinfo is not None
        and "redis-cluster" in item.nodeid
        and _refused_cross_slot(call.excinfo.value)
    ):
        report.outcome = "skipped"
        report.wasxfail = CROSS_SLOT


def _refused_cross_slot(error: BaseException | None) -> bool:
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, CrossSlotUnsupported):
            return True
        if isinstance(error, BaseExceptionGroup):
            return any(_refused_cross_slot(e) for e in error.exceptions)
        error = error.__cause__ or error.__context__
        seen += 1
    return False
