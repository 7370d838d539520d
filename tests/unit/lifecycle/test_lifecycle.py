"""The lifecycle rules: immutable content-hashed versions, four-eyes publishing, shadow, rollback, audit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.models import AuditEntry
from service.errors import Conflict, Invalid
from service.rules import lifecycle
from service.rules import repository as repo
from service.rules.trial import TrialWorker
from tests.unit.lifecycle.samples import BROKEN_YAML, MARKDOWN_YAML, NAME, transfer_yaml

Sessions = async_sessionmaker[AsyncSession]


async def audit_actions(sessions: Sessions) -> list[tuple[str, str]]:
    async with sessions() as session:
        rows = await session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [(row.action, row.actor) for row in rows]


async def generation(sessions: Sessions) -> int:
    async with sessions() as session:
        return await repo.current_generation(session)


async def test_first_version_is_a_draft_numbered_one(sessions: Sessions, trials: TrialWorker) -> None:
    created = await lifecycle.create_version(sessions, trials, NAME, transfer_yaml(), "alice")
    assert (created.created, created.record.version, created.record.status) == (True, 1, "draft")


async def test_same_content_returns_the_existing_version(sessions: Sessions, trials: TrialWorker) -> None:
    first = await lifecycle.create_version(sessions, trials, NAME, transfer_yaml(), "alice")
    again = await lifecycle.create_version(sessions, trials, NAME, transfer_yaml(), "bob")
    assert (again.created, again.record.version, again.record.author) == (False, 1, "alice")
    assert again.record.sha256 == first.record.sha256


async def test_new_content_gets_the_next_number(sessions: Sessions, trials: TrialWorker) -> None:
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v1"), "alice")
    second = await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v2"), "alice")
    assert second.record.version == 2


async def test_invalid_text_is_refused_with_located_errors_and_nothing_stored(
    sessions: Sessions, trials: TrialWorker
) -> None:
    with pytest.raises(lifecycle.InvalidRuleset) as caught:
        await lifecycle.create_version(sessions, trials, NAME, BROKEN_YAML, "alice")
    errors = [e.to_dict() for e in caught.value.errors]
    assert errors and all(e["line"] >= 1 and e["field"] for e in errors)
    async with sessions() as session:
        assert await repo.is_empty(session)


async def test_name_in_document_must_match(sessions: Sessions, trials: TrialWorker) -> None:
    with pytest.raises(Invalid) as caught:
        await lifecycle.create_version(sessions, trials, "other-name", transfer_yaml(), "alice")
    assert caught.value.errors[0].field == "ruleset"


async def test_author_cannot_publish_own_draft(sessions: Sessions, trials: TrialWorker) -> None:
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml(), "alice")
    with pytest.raises(Conflict, match="four-eyes"):
        await lifecycle.publish(sessions, trials, NAME, 1, "alice")


async def test_publish_activates_and_bumps_generation(sessions: Sessions, trials: TrialWorker) -> None:
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml(), "alice")
    before = await generation(sessions)
    published = await lifecycle.publish(sessions, trials, NAME, 1, "bob")
    async with sessions() as session:
        pointer = await repo.get_ruleset(session, NAME)
    assert (published.status, published.publisher) == ("published", "bob")
    assert pointer is not None and pointer.active_version == 1 and pointer.is_kind_default
    assert await generation(sessions) == before + 1


async def test_publishing_a_non_draft_conflicts(sessions: Sessions, trials: TrialWorker) -> None:
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml(), "alice")
    await lifecycle.publish(sessions, trials, NAME, 1, "bob")
    with pytest.raises(Conflict):
        await lifecycle.publish(sessions, trials, NAME, 1, "carol")


async def test_failing_tests_block_publishing(sessions: Sessions, trials: TrialWorker) -> None:
    created = await lifecycle.create_version(sessions, trials, NAME, transfer_yaml(passing=False), "alice")
    assert created.created and not all(t["passed"] for t in created.report["tests"])
    with pytest.raises(Conflict) as caught:
        await lifecycle.publish(sessions, trials, NAME, 1, "bob")
    extra = caught.value.errors[0].extra
    assert extra is not None and extra["failed_tests"] == ["a small transfer is approved"]


async def test_publishing_retires_the_previous_version(sessions: Sessions, trials: TrialWorker) -> None:
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v1"), "alice")
    await lifecycle.publish(sessions, trials, NAME, 1, "bob")
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v2"), "alice")
    await lifecycle.publish(sessions, trials, NAME, 2, "bob")
    async with sessions() as session:
        statuses = [(v.version, v.status) for v in await repo.list_versions(session, NAME)]
    assert statuses == [(1, "retired"), (2, "published")]


async def test_rollback_reactivates_the_previous_published_version(
    sessions: Sessions, trials: TrialWorker
) -> None:
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v1"), "alice")
    await lifecycle.publish(sessions, trials, NAME, 1, "bob")
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v2"), "alice")
    await lifecycle.publish(sessions, trials, NAME, 2, "bob")
    restored = await lifecycle.rollback(sessions, NAME, None, "carol")
    async with sessions() as session:
        pointer = await repo.get_ruleset(session, NAME)
        v2 = await repo.get_version(session, NAME, 2)
    assert restored.version == 1 and restored.status == "published"
    assert pointer is not None and pointer.active_version == 1
    assert v2 is not None and v2.status == "retired"


async def test_rollback_to_a_never_published_version_conflicts(
    sessions: Sessions, trials: TrialWorker
) -> None:
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v1"), "alice")
    await lifecycle.publish(sessions, trials, NAME, 1, "bob")
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v2"), "alice")
    with pytest.raises(Conflict):
        await lifecycle.rollback(sessions, NAME, 2, "carol")


async def test_rollback_without_an_earlier_version_conflicts(sessions: Sessions, trials: TrialWorker) -> None:
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v1"), "alice")
    await lifecycle.publish(sessions, trials, NAME, 1, "bob")
    with pytest.raises(Conflict):
        await lifecycle.rollback(sessions, NAME, None, "carol")


async def test_shadow_set_and_clear(sessions: Sessions, trials: TrialWorker) -> None:
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v1"), "alice")
    await lifecycle.publish(sessions, trials, NAME, 1, "bob")
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v2"), "alice")
    await lifecycle.set_shadow(sessions, NAME, 2, "bob")
    async with sessions() as session:
        shadowed = await repo.get_ruleset(session, NAME)
    await lifecycle.clear_shadow(sessions, NAME, 2, "bob")
    async with sessions() as session:
        cleared = await repo.get_ruleset(session, NAME)
    assert shadowed is not None and shadowed.shadow_version == 2
    assert cleared is not None and cleared.shadow_version is None


async def test_the_active_version_cannot_be_its_own_shadow(sessions: Sessions, trials: TrialWorker) -> None:
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v1"), "alice")
    await lifecycle.publish(sessions, trials, NAME, 1, "bob")
    with pytest.raises(Conflict):
        await lifecycle.set_shadow(sessions, NAME, 1, "bob")


async def test_publishing_the_shadow_version_ends_its_shadow(sessions: Sessions, trials: TrialWorker) -> None:
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v1"), "alice")
    await lifecycle.publish(sessions, trials, NAME, 1, "bob")
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v2"), "alice")
    await lifecycle.set_shadow(sessions, NAME, 2, "bob")
    await lifecycle.publish(sessions, trials, NAME, 2, "bob")
    async with sessions() as session:
        pointer = await repo.get_ruleset(session, NAME)
    assert pointer is not None and (pointer.active_version, pointer.shadow_version) == (2, None)


async def test_every_change_is_audited_with_its_actor(sessions: Sessions, trials: TrialWorker) -> None:
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v1"), "alice")
    await lifecycle.publish(sessions, trials, NAME, 1, "bob")
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml("v2"), "alice")
    await lifecycle.set_shadow(sessions, NAME, 2, "carol")
    await lifecycle.clear_shadow(sessions, NAME, 2, "carol")
    await lifecycle.publish(sessions, trials, NAME, 2, "bob")
    await lifecycle.rollback(sessions, NAME, 1, "dave")
    assert await audit_actions(sessions) == [
        ("ruleset.version.create", "alice"),
        ("ruleset.publish", "bob"),
        ("ruleset.version.create", "alice"),
        ("ruleset.shadow.set", "carol"),
        ("ruleset.shadow.clear", "carol"),
        ("ruleset.publish", "bob"),
        ("ruleset.rollback", "dave"),
    ]


async def test_a_refused_publish_writes_no_audit_row(sessions: Sessions, trials: TrialWorker) -> None:
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml(), "alice")
    with pytest.raises(Conflict, match="four-eyes"):
        await lifecycle.publish(sessions, trials, NAME, 1, "alice")
    assert await audit_actions(sessions) == [("ruleset.version.create", "alice")]


async def test_seed_publishes_every_file_as_version_one(
    sessions: Sessions, tmp_path: Path, trials: TrialWorker
) -> None:
    (tmp_path / "transfer").mkdir()
    (tmp_path / "transfer" / "a.yaml").write_text(transfer_yaml(name="transfer-a"))
    (tmp_path / "transfer" / "b.yaml").write_text(transfer_yaml(name="transfer-b"))
    seeded = await lifecycle.seed_if_empty(sessions, trials, tmp_path)
    async with sessions() as session:
        rulesets = await repo.list_rulesets(session)
        version = await repo.get_version(session, "transfer-a", 1)
    assert seeded == [("transfer-a", 1), ("transfer-b", 1)]
    assert [(r.name, r.active_version, r.is_kind_default) for r in rulesets] == [
        ("transfer-a", 1, True),
        ("transfer-b", 1, False),
    ]
    assert version is not None and (version.author, version.publisher, version.status) == (
        "system",
        "system",
        "published",
    )
    assert await audit_actions(sessions) == [("ruleset.seed", "system"), ("ruleset.seed", "system")]


async def test_seed_does_nothing_on_a_store_with_versions(
    sessions: Sessions, tmp_path: Path, trials: TrialWorker
) -> None:
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml(), "alice")
    (tmp_path / "x.yaml").write_text(transfer_yaml(name="transfer-a"))
    assert await lifecycle.seed_if_empty(sessions, trials, tmp_path) == []


async def test_seed_skips_a_broken_file(sessions: Sessions, tmp_path: Path, trials: TrialWorker) -> None:
    (tmp_path / "a.yaml").write_text(BROKEN_YAML)
    (tmp_path / "b.yaml").write_text(transfer_yaml(name="transfer-b"))
    assert await lifecycle.seed_if_empty(sessions, trials, tmp_path) == [("transfer-b", 1)]


async def test_concurrent_new_versions_get_distinct_numbers(sessions: Sessions, trials: TrialWorker) -> None:
    texts = [transfer_yaml(f"v{n}") for n in range(1, 6)]
    created = await asyncio.gather(
        *(lifecycle.create_version(sessions, trials, NAME, text, "alice") for text in texts)
    )
    assert sorted(c.record.version for c in created) == [1, 2, 3, 4, 5]


async def test_concurrent_pushes_of_the_same_content_store_one_version(
    sessions: Sessions, trials: TrialWorker
) -> None:
    created = await asyncio.gather(
        *(lifecycle.create_version(sessions, trials, NAME, transfer_yaml(), f"author-{n}") for n in range(4))
    )
    assert {c.record.version for c in created} == {1}
    assert sum(c.created for c in created) == 1


async def test_a_version_cannot_change_the_kind_of_its_ruleset(
    sessions: Sessions, trials: TrialWorker
) -> None:
    await lifecycle.create_version(sessions, trials, NAME, transfer_yaml(), "alice")
    other_kind = MARKDOWN_YAML.replace("ruleset: markdown-approval", f"ruleset: {NAME}")
    with pytest.raises(Invalid) as caught:
        await lifecycle.create_version(sessions, trials, NAME, other_kind, "alice")
    assert [e.field for e in caught.value.errors] == ["kind"]


async def test_concurrent_publishes_leave_exactly_one_published_version(
    sessions: Sessions, trials: TrialWorker
) -> None:
    for marker in ("v1", "v2", "v3"):
        await lifecycle.create_version(sessions, trials, NAME, transfer_yaml(marker), "alice")
    await asyncio.gather(*(lifecycle.publish(sessions, trials, NAME, n, "bob") for n in (1, 2, 3)))
    async with sessions() as session:
        pointer = await repo.get_ruleset(session, NAME)
        versions = await repo.list_versions(session, NAME)
    live = [v.version for v in versions if v.status == "published"]
    assert pointer is not None and live == [pointer.active_version]
    assert sorted(v.status for v in versions) == ["published", "retired", "retired"]
