"""The `stock` fixture: the same tests run against every StockStore backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.stock.store import StockStore
from tests.contract.stock_backends import BACKENDS, FakeClock, open_backend


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=[*BACKENDS, "redis+postgresql"])
async def stock(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[StockStore]:
    async with open_backend(request.param, request, clock) as store:
        yield store
