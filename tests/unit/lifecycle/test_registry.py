"""The registry serves one immutable snapshot per request and follows the store's generation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.models import RulesetGenerationRow, RulesetRow, RulesetVersionRow
from service.rules import lifecycle
from service.rules.registry import RulesRegistry
from service.rules.trial import TrialWorker
from tests.unit.lifecycle.samples import NAME, PROMO_TRANSFER, SMALL_TRANSFER, ZERO_TRANSFER, transfer_yaml

Sessions = async_sessionmaker[AsyncSession]


async def published(sessions: Sessions, trials: TrialWorker, marker: str) -> int:
    created = await lifecycle.create_version(sessions, trials, NAME, transfer_yaml(marker), "alice")
    await lifecycle.publish(sessions, trials, NAME, created.record.version, "bob")
    return created.record.version


async def test_empty_store_has_no_active_ruleset(sessions: Sessions) -> None:
    registry = RulesRegistry(sessions, "python")
    await registry.refresh(force=True)
    assert registry.snapshot().active("transfer") is None


async def test_active_ruleset_of_a_kind_evaluates_with_its_version(
    sessions: Sessions, trials: TrialWorker
) -> None:
    await published(sessions, trials, "v1")
    registry = RulesRegistry(sessions, "python")
    await registry.refresh(force=True)
    active = registry.snapshot().active("transfer")
    assert active is not None
    outcome = active.evaluate(SMALL_TRANSFER)
    assert (outcome.name, outcome.version, outcome.result["reason"]) == (NAME, 1, "v1")
    assert outcome.sha256 == active.sha256


async def test_a_ruleset_of_another_kind_is_not_returned(sessions: Sessions, trials: TrialWorker) -> None:
    await published(sessions, trials, "v1")
    registry = RulesRegistry(sessions, "python")
    await registry.refresh(force=True)
    assert registry.snapshot().active("markdown", NAME) is None


async def test_a_taken_snapshot_keeps_its_version_after_a_publish(
    sessions: Sessions, trials: TrialWorker
) -> None:
    await published(sessions, trials, "v1")
    registry = RulesRegistry(sessions, "python")
    await registry.refresh(force=True)
    taken = registry.snapshot()
    await published(sessions, trials, "v2")
    assert await registry.refresh()
    old, new = taken.active("transfer"), registry.snapshot().active("transfer")
    assert old is not None and old.evaluate(SMALL_TRANSFER).result["reason"] == "v1"
    assert new is not None and new.evaluate(SMALL_TRANSFER).result["reason"] == "v2"


async def test_refresh_without_a_change_keeps_the_snapshot(sessions: Sessions, trials: TrialWorker) -> None:
    await published(sessions, trials, "v1")
    registry = RulesRegistry(sessions, "python")
    await registry.refresh(force=True)
    before = registry.snapshot()
    assert not await registry.refresh()
    assert registry.snapshot() is before


async def test_shadow_evaluation_reports_differences(sessions: Sessions, trials: TrialWorker) -> None:
    await published(sessions, trials, "v1")
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v2", limit=100), "alice")
    await lifecycle.set_shadow(sessions, NAME, 2, "bob")
    registry = RulesRegistry(sessions, "python")
    await registry.refresh(force=True)
    active = registry.snapshot().active("transfer")
    assert active is not None
    primary = active.evaluate(SMALL_TRANSFER)
    comparison = active.shadow_evaluate(SMALL_TRANSFER, primary)
    assert comparison is not None and comparison.shadow.version == 2
    assert comparison.differences["outcome"] == {"active": "approve", "shadow": "route"}
    assert primary.result["outcome"] == "approve"


async def test_shadow_without_shadow_version_is_none(sessions: Sessions, trials: TrialWorker) -> None:
    await published(sessions, trials, "v1")
    registry = RulesRegistry(sessions, "python")
    await registry.refresh(force=True)
    active = registry.snapshot().active("transfer")
    assert active is not None and active.shadow_evaluate(PROMO_TRANSFER) is None


async def test_rollback_is_picked_up(sessions: Sessions, trials: TrialWorker) -> None:
    await published(sessions, trials, "v1")
    await published(sessions, trials, "v2")
    registry = RulesRegistry(sessions, "python")
    await registry.refresh(force=True)
    await lifecycle.rollback(sessions, NAME, None, "carol")
    await registry.refresh()
    active = registry.snapshot().active("transfer")
    assert active is not None and active.version == 1


async def test_durable_engine_serves_the_same_result(sessions: Sessions, trials: TrialWorker) -> None:
    await published(sessions, trials, "v1")
    registry = RulesRegistry(sessions, "durable")
    await registry.refresh(force=True)
    active = registry.snapshot().active("transfer")
    assert active is not None
    assert active.evaluate(PROMO_TRANSFER).result["outcome"] == "route"


async def test_a_failing_shadow_is_reported_and_the_active_result_stands(
    sessions: Sessions, trials: TrialWorker
) -> None:
    await published(sessions, trials, "v1")
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v2", divide=True), "alice")
    await lifecycle.set_shadow(sessions, NAME, 2, "bob")
    registry = RulesRegistry(sessions, "python")
    await registry.refresh(force=True)
    active = registry.snapshot().active("transfer")
    assert active is not None
    primary = active.evaluate(ZERO_TRANSFER)
    comparison = active.shadow_evaluate(ZERO_TRANSFER, primary)
    assert comparison is not None and comparison.error is not None and comparison.shadow is None
    assert primary.result["outcome"] == "approve"


async def test_a_named_ruleset_of_the_kind_is_served_instead_of_the_default(
    sessions: Sessions, trials: TrialWorker
) -> None:
    await published(sessions, trials, "v1")
    await lifecycle.create_version(
        sessions, trials, "transfer-strict", transfer_yaml("s1", name="transfer-strict"), "alice"
    )
    await lifecycle.publish(sessions, trials, "transfer-strict", 1, "bob")
    registry = RulesRegistry(sessions, "python")
    await registry.refresh(force=True)
    snapshot = registry.snapshot()
    default, named = snapshot.active("transfer"), snapshot.active("transfer", "transfer-strict")
    assert default is not None and default.name == NAME
    assert named is not None and named.name == "transfer-strict"


async def test_changing_the_kind_default_switches_the_served_ruleset(
    sessions: Sessions, trials: TrialWorker
) -> None:
    await published(sessions, trials, "v1")
    await lifecycle.create_version(
        sessions, trials, "transfer-strict", transfer_yaml("s1", name="transfer-strict"), "alice"
    )
    await lifecycle.publish(sessions, trials, "transfer-strict", 1, "bob")
    registry = RulesRegistry(sessions, "python")
    await registry.refresh(force=True)
    await lifecycle.set_kind_default(sessions, "transfer-strict", "carol")
    assert await registry.refresh()
    active = registry.snapshot().active("transfer")
    assert active is not None and active.name == "transfer-strict"


async def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_the_poller_picks_up_a_publish_from_another_process(
    sessions: Sessions, trials: TrialWorker
) -> None:
    await published(sessions, trials, "v1")
    registry = RulesRegistry(sessions, "python", reload_interval_seconds=0.05)
    await registry.start()
    try:
        await published(sessions, trials, "v2")
        assert await wait_for(lambda: registry.snapshot().generation == 2)
        active = registry.snapshot().active("transfer")
        assert active is not None and active.version == 2
    finally:
        await registry.close()


async def test_a_version_that_fails_to_load_keeps_the_old_snapshot(
    sessions: Sessions, trials: TrialWorker
) -> None:
    await published(sessions, trials, "v1")
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v2"), "alice")
    registry = RulesRegistry(sessions, "python", reload_interval_seconds=0.05)
    await registry.start()
    try:
        before = registry.snapshot()
        async with sessions.begin() as session:
            # Damaged text behind the store's back, then a generation bump: the reload must fail safe.
            await session.execute(
                update(RulesetVersionRow).where(RulesetVersionRow.version == 2).values(yaml_text="rules: [")
            )
            await session.execute(update(RulesetRow).values(shadow_version=2))
            await session.execute(
                update(RulesetGenerationRow).values(generation=RulesetGenerationRow.generation + 1)
            )
        assert await wait_for(lambda: registry.last_error is not None)
        assert registry.snapshot() is before
    finally:
        await registry.close()
