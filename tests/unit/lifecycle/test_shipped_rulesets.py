"""The rulesets shipped in `rulesets/` seed an empty store and are served, one per decision kind."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.rules import lifecycle
from service.rules.language import FACT_CATALOG
from service.rules.registry import RulesRegistry
from service.rules.trial import TrialWorker

SHIPPED = Path(__file__).resolve().parents[3] / "rulesets"


@pytest.fixture
def shipped() -> Path:
    if not any(SHIPPED.rglob("*.yaml")):
        pytest.skip("no shipped rulesets in this checkout")
    return SHIPPED


async def test_every_shipped_file_is_seeded_as_published_version_one(
    sessions: async_sessionmaker[AsyncSession], shipped: Path, trials: TrialWorker
) -> None:
    seeded = await lifecycle.seed_if_empty(sessions, trials, shipped)
    assert len(seeded) == len(lifecycle.ruleset_files(shipped))
    assert {version for _, version in seeded} == {1}


async def test_every_kind_has_an_active_ruleset_after_seeding(
    sessions: async_sessionmaker[AsyncSession], shipped: Path, trials: TrialWorker
) -> None:
    await lifecycle.seed_if_empty(sessions, trials, shipped)
    registry = RulesRegistry(sessions, "durable")
    await registry.refresh(force=True)
    snapshot = registry.snapshot()
    kinds = {path.parent.name for path in lifecycle.ruleset_files(shipped)}
    assert kinds <= set(FACT_CATALOG)
    assert all(snapshot.active(kind) is not None for kind in kinds)
