"""What the app does to the process while it serves: start-up's objects are frozen out of the garbage
collector's reach and the young generation is collected in larger sweeps; shutdown puts both back. The
loop's default executor (checkpoints, ruleset checks, simulations) runs at a lower priority than the loop."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
from typing import Any

import pytest

from service.app import (
    BACKGROUND_NICE_INCREMENT,
    YOUNG_GENERATION_THRESHOLD,
    background_executor,
    create_app,
)
from service.rules.trial import TrialWorker
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


def _own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


linux_only = pytest.mark.skipif(sys.platform != "linux", reason="a nice value per thread is Linux's")


@linux_only
def test_background_threads_run_at_a_higher_nice_value_than_their_creator() -> None:
    before = _own_nice()
    executor = background_executor()
    try:
        assert executor.submit(_own_nice).result(timeout=10) == min(19, before + BACKGROUND_NICE_INCREMENT)
        assert _own_nice() == before  # the creator's own stays
    finally:
        executor.shutdown()


@linux_only
async def test_the_app_runs_asyncio_to_thread_on_background_threads(
    sqlite_url: str, trials: TrialWorker
) -> None:
    """The app's start installs the executor on its loop (here the test's own, through ASGI's lifespan)."""
    app = create_app(make_settings(sqlite_url), trials=trials)
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    serving = asyncio.create_task(app(scope, incoming.get, sent.put))  # type: ignore[arg-type]
    await incoming.put({"type": "lifespan.startup"})
    assert (await asyncio.wait_for(sent.get(), 60))["type"] == "lifespan.startup.complete"
    try:
        assert await asyncio.to_thread(_own_nice) == min(19, _own_nice() + BACKGROUND_NICE_INCREMENT)
    finally:
        await incoming.put({"type": "lifespan.shutdown"})
        assert (await asyncio.wait_for(sent.get(), 60))["type"] == "lifespan.shutdown.complete"
        await serving
