"""Which ruleset versions a run uses: files, NAME@PATH, NAME@VERSION from the ruleset store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.db.engine import create_engine, session_factory
from service.db.migrate import upgrade
from service.rules import lifecycle
from service.rules.trial import TrialWorker
from service.settings import DatabaseSettings
from simulators.policy import PolicyError
from simulators.versions import VersionSet, baseline, resolve, store_lookup

RULESETS = Path(__file__).parent / "rulesets"
EMPTY = VersionSet("defaults", {})


async def _store_with_dc_only(url: str) -> None:
    engine = create_engine(DatabaseSettings(url=url))
    try:
        await upgrade(engine)
        text = (RULESETS / "dc-only.yaml").read_text()
        with TrialWorker() as trials:
            await lifecycle.create_version(session_factory(engine), trials, "dc-only", text, "planner-a")
    finally:
        await engine.dispose()


def test_a_version_is_read_from_the_ruleset_store(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    asyncio.run(_store_with_dc_only(url))
    [version_set] = resolve(["dc-only@1"], EMPTY, store_lookup(DatabaseSettings(url=url)))
    assert version_set.label == "dc-only@1"
    ruleset, ref = version_set.rulesets["allocation"]
    assert (ruleset.name, ref.version, ref.source) == ("dc-only", "1", "store")


def test_a_missing_store_version_is_named(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    asyncio.run(_store_with_dc_only(url))
    with pytest.raises(PolicyError, match="no version 9 of 'dc-only'"):
        resolve(["dc-only@9"], EMPTY, store_lookup(DatabaseSettings(url=url)))


def test_name_at_path_must_name_the_ruleset_in_the_file() -> None:
    with pytest.raises(PolicyError, match="holds ruleset 'dc-only'"):
        resolve([f"other@{RULESETS / 'dc-only.yaml'}"], EMPTY)


def test_comma_joined_versions_make_one_run() -> None:
    spec = f"{RULESETS / 'dc-only.yaml'},{RULESETS / 'nearest-anywhere.yaml'}"
    [version_set] = resolve([spec], EMPTY)
    # both are allocation rulesets: the later one wins its kind
    assert version_set.label == "dc-only@dc-only+nearest-anywhere@nearest-anywhere"
    assert version_set.rulesets["allocation"][1].name == "nearest-anywhere"


def test_the_baseline_takes_the_shipped_ruleset_of_every_kind() -> None:
    base = baseline({}, RULESETS)
    assert set(base.rulesets) == {"allocation", "availability", "reorder", "transfer", "markdown"}


def test_a_scenario_ruleset_replaces_the_shipped_one_of_its_kind() -> None:
    base = baseline({"allocation": "dc-only.yaml"}, RULESETS)
    assert base.rulesets["allocation"][1].name == "dc-only"
