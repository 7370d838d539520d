"""A worker that cannot confirm its rulesets against the store within the switch deadline refuses to decide.

The registry's clock is a controllable one: the test moves time, the store's failures are real (a table
renamed away, a version row made uncompilable).
"""

from __future__ import annotations

import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.models import RulesetGenerationRow, RulesetVersionRow
from service.rules.fleet import fleet
from service.rules.registry import RulesRegistry, RulesUnconfirmed
from service.rules.trial import TrialWorker
from tests.unit.lifecycle.samples import NAME
from tests.unit.lifecycle.test_registry import published

Sessions = async_sessionmaker[AsyncSession]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def registry_at(sessions: Sessions, clock: Clock) -> RulesRegistry:
    registry = RulesRegistry(sessions, "python", switch_deadline_seconds=10.0, clock=clock)
    await registry.refresh(force=True)
    return registry


async def test_a_confirmed_worker_decides_until_the_deadline_passes_without_a_read(
    sessions: Sessions,
    trials: TrialWorker,
) -> None:
    await published(sessions, trials, "v1")
    clock = Clock()
    registry = await registry_at(sessions, clock)
    clock.now += 10.0
    registry.confirm("transfer")  # exactly at the deadline: still confirmed
    clock.now += 0.5
    with pytest.raises(RulesUnconfirmed) as refused:
        registry.confirm("transfer")
    assert refused.value.status == 503 and "transfer" in refused.value.detail
    assert registry.confirmation()["unconfirmed_kinds"] == ["transfer"]
    assert not await registry.refresh()  # nothing changed, but the read confirms it
    registry.confirm("transfer")
    assert registry.confirmation()["unconfirmed_kinds"] == []


async def test_a_failed_read_does_not_confirm(sessions: Sessions, trials: TrialWorker) -> None:
    await published(sessions, trials, "v1")
    clock = Clock()
    registry = await registry_at(sessions, clock)
    async with sessions() as session:
        await session.execute(text("ALTER TABLE ruleset_generation RENAME TO ruleset_generation_away"))
        await session.commit()
    try:
        clock.now += 6.0
        with pytest.raises(Exception):  # noqa: B017 (whatever the driver raises for a missing table)
            await registry.refresh()
        registry.confirm("transfer")  # 6 s: within the deadline
        clock.now += 6.0
        with pytest.raises(Exception):  # noqa: B017
            await registry.refresh()
        with pytest.raises(RulesUnconfirmed):
            registry.confirm("transfer")
        with pytest.raises(RulesUnconfirmed):
            registry.confirm("allocation")  # nothing read: no kind can be confirmed
    finally:
        async with sessions() as session:
            await session.execute(text("ALTER TABLE ruleset_generation_away RENAME TO ruleset_generation"))
            await session.commit()
    await registry.refresh()
    registry.confirm("transfer")


async def test_a_newer_version_that_cannot_be_built_fences_only_its_kind(
    sessions: Sessions, trials: TrialWorker
) -> None:
    await published(sessions, trials, "v1")
    clock = Clock()
    registry = await registry_at(sessions, clock)
    await published(sessions, trials, "v2")
    async with sessions() as session:  # the store now holds a version this worker cannot compile
        await session.execute(
            update(RulesetVersionRow)
            .where(RulesetVersionRow.name == NAME, RulesetVersionRow.version == 2)
            .values(yaml_text="rules: [unclosed")
        )
        await session.commit()
    with pytest.raises(Exception):  # noqa: B017 (the parse error of the broken version)
        await registry.refresh()
    clock.now += 11.0
    with pytest.raises(Exception):  # noqa: B017
        await registry.refresh()  # read again (so the store is reachable), still cannot build it
    with pytest.raises(RulesUnconfirmed):
        registry.confirm("transfer")
    registry.confirm("markdown")  # unchanged in the store: confirmed by the same read
    assert registry.snapshot().active("transfer") is not None  # reads still see what it served


async def test_each_worker_reports_what_it_serves_in_the_fleet_view(
    sessions: Sessions, trials: TrialWorker
) -> None:
    await published(sessions, trials, "v1")
    first, second = Clock(), Clock()
    one = await registry_at(sessions, first)
    other = await registry_at(sessions, second)
    await one.beat(force=True)
    await other.beat(force=True)
    await published(sessions, trials, "v2")
    await one.refresh()
    await one.beat()  # the snapshot changed: written at once, whatever the period
    async with sessions() as session:
        generation = (await session.get(RulesetGenerationRow, 1)).generation  # type: ignore[union-attr]
        view = await fleet(session, generation, 5.0)
    workers = {w["worker"]: w for w in view["workers"]}
    assert set(workers) == {one.identity.worker, other.identity.worker}
    assert workers[one.identity.worker]["current"] and not workers[other.identity.worker]["current"]
    assert [s["version"] for s in workers[one.identity.worker]["served"] if s["name"] == NAME] == [2]
    assert [s["version"] for s in workers[other.identity.worker]["served"] if s["name"] == NAME] == [1]
    assert (view["alive"], view["behind"]) == (2, 1)
    await other.stop()  # never started polling: nothing to remove
    one._task = None


async def test_a_request_holding_a_snapshot_replaced_after_the_deadline_is_refused(
    sessions: Sessions, trials: TrialWorker
) -> None:
    """A request takes the snapshot, waits (on stock, say), and decides after the worker swapped in the
    next generation: it may answer from the old snapshot if that was confirmed within the deadline, not
    if the worker held it unconfirmed past the deadline before the swap."""
    await published(sessions, trials, "v1")
    clock = Clock()
    registry = await registry_at(sessions, clock)
    fresh = registry.snapshot()  # taken right after a confirming read
    await published(sessions, trials, "v2")
    clock.now += 1.0
    assert await registry.refresh()
    registry.confirm("transfer", fresh)  # replaced 1 s after its confirmation: still good
    registry.confirm("transfer", registry.snapshot())

    stale = registry.snapshot()  # generation 2, then 12 s without a read
    await published(sessions, trials, "v3")
    clock.now += 12.0
    with pytest.raises(RulesUnconfirmed):
        registry.confirm("transfer", stale)  # unconfirmed now, before the swap
    assert await registry.refresh()  # the read that swaps generation 3 in also confirms it
    registry.confirm("transfer", registry.snapshot())
    with pytest.raises(RulesUnconfirmed):
        registry.confirm("transfer", stale)  # held past the deadline: refused after the swap too
    with pytest.raises(RulesUnconfirmed):
        registry.confirm("transfer", fresh)
