"""The app without its background dispatcher and periodic checks: tests drive those on their own clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from service.rules.trial import TrialWorker
from service.settings import WorkflowSettings
from tests.apiclient import ApiClient, api_client, make_settings


@pytest.fixture
async def workflow_api(database_url: str, trials: TrialWorker) -> AsyncIterator[ApiClient]:
    """On SQLite and on PostgreSQL, SQL stock backend, one key per role."""
    settings = replace(make_settings(database_url), workflow=WorkflowSettings(background=False))
    async with api_client(settings, trials) as client:
        yield client
