"""The app served in-process with the SQL stock backend (SQLite) and with the Redis backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.rules.trial import TrialWorker
from tests.apiclient import ApiClient, api_client, make_settings


@pytest.fixture(params=["sql", "redis"])
async def stock_api(
    request: pytest.FixtureRequest, migrated_sqlite_url: str, trials: TrialWorker
) -> AsyncIterator[ApiClient]:
    if request.param == "redis":
        from tests.contract.stock_backends import flushed_redis

        settings = make_settings(migrated_sqlite_url, "redis", await flushed_redis(request))
    else:
        settings = make_settings(migrated_sqlite_url)
    async with api_client(settings, trials) as client:
        yield client
