"""What the app does to the process while it serves: start-up's objects are frozen out of the garbage
collector's reach and the young generation is collected in larger sweeps; shutdown puts both back."""

from __future__ import annotations

import gc

from service.app import YOUNG_GENERATION_THRESHOLD
from tests.apiclient import api_client, make_settings


async def test_the_collector_is_tuned_while_serving_and_restored_after(sqlite_url: str) -> None:
    before = gc.get_threshold()
    gc.unfreeze()
    async with api_client(make_settings(sqlite_url, tune_collector=True)) as client:
        assert gc.get_threshold()[0] == YOUNG_GENERATION_THRESHOLD
        assert gc.get_freeze_count() > 10_000
        response = await client.as_("stock").get("/v1/locations")
        assert response.status_code == 200
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_an_app_told_not_to_tune_the_collector_leaves_it_alone(sqlite_url: str) -> None:
    before = gc.get_threshold()
    async with api_client(make_settings(sqlite_url, tune_collector=False)) as client:
        assert gc.get_threshold() == before
        assert (await client.as_("stock").get("/v1/locations")).status_code == 200
    assert gc.get_threshold() == before
