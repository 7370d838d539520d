"""Fixtures for the simulator tests: the small shipped scenario, its world and its event stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.events import Event
from simulators.generator import generate_events
from simulators.scenario import Scenario, World, load_scenario

SCENARIOS = Path(__file__).resolve().parents[3] / "simulators" / "scenarios"


@pytest.fixture(scope="session")
def small_scenario() -> Scenario:
    return load_scenario(SCENARIOS / "small.yaml")


@pytest.fixture(scope="session")
def small_world(small_scenario: Scenario) -> World:
    return small_scenario.build()


@pytest.fixture(scope="session")
def small_events(small_world: World) -> list[Event]:
    return generate_events(small_world)
