"""The approval workflow in the simulator: routed transfers wait for their approvers' sampled response
times, escalate past the SLA, expire past the chain's end, and are re-checked on live stock when approved."""

from __future__ import annotations

from typing import Any

import msgspec

from simulators.events import Event
from simulators.kpis import encode
from simulators.scenario import Approvals, Scenario
from simulators.simulation import Options, simulate
from simulators.versions import VersionSet, resolve

# every transfer is routed to a store manager within 4 h, then the district and regional managers
ROUTE_ALL = """
ruleset: route-every-transfer
kind: transfer
facts: {transfer.qty: int}
rules:
  - {id: never, priority: 1, when: transfer.qty < 0, then: {outcome: reject}}
default:
  outcome: route
  approvers: [store_manager]
  sla_hours: 4
  escalation: [store_manager, district_manager, regional_manager]
"""


def _kpis(scenario: Scenario, events: list[Event], tmp_path: Any, approvals: Approvals) -> dict[str, Any]:
    ruleset = tmp_path / "route-all.yaml"
    ruleset.write_text(ROUTE_ALL)
    world = msgspec.structs.replace(scenario, approvals=approvals).build()
    out = simulate(world, events, resolve([str(ruleset)], VersionSet("defaults", {})), Options())
    return out


def _run_kpis(out: dict[str, Any]) -> dict[str, Any]:
    kpis: dict[str, Any] = out["runs"][0]["kpis"]
    return kpis


def test_quick_approvers_execute_every_routed_transfer(
    small_scenario: Scenario, small_events: list[Event], tmp_path: Any
) -> None:
    kpis = _run_kpis(_kpis(small_scenario, small_events, tmp_path, Approvals(True, {}, 0.5)))
    assert kpis["transfers_routed"] > 0
    assert kpis["transfers_expired"] == 0
    assert kpis["transfers_executed"] + kpis["transfers_blocked"] == kpis["transfers_routed"]
    assert 0 < kpis["approval_cycle_hours_p50"] <= kpis["approval_cycle_hours_p90"] <= 4


def test_approvers_who_never_answer_let_every_routed_transfer_expire(
    small_scenario: Scenario, small_events: list[Event], tmp_path: Any
) -> None:
    kpis = _run_kpis(_kpis(small_scenario, small_events, tmp_path, Approvals(True, {}, 1e9)))
    assert kpis["transfers_expired"] == kpis["transfers_routed"] > 0
    assert kpis["transfers_executed"] == 0 and kpis["approval_cycle_hours_p50"] is None


def test_a_slow_level_escalates_and_the_next_one_answers(
    small_scenario: Scenario, small_events: list[Event], tmp_path: Any
) -> None:
    # the scenario's requester is a store manager, so the district manager is the first level
    slow = Approvals(True, {"district_manager": 1e9, "regional_manager": 0.25}, 1e9)
    kpis = _run_kpis(_kpis(small_scenario, small_events, tmp_path, slow))
    assert kpis["transfers_expired"] == 0
    assert kpis["approval_cycle_hours_p50"] > 4  # a whole SLA passed at the first level


def test_the_same_scenario_gives_byte_identical_workflow_kpis(
    small_scenario: Scenario, small_events: list[Event], tmp_path: Any
) -> None:
    approvals = Approvals(True, {"store_manager": 3.0}, 6.0)
    first = _kpis(small_scenario, small_events, tmp_path, approvals)
    second = _kpis(small_scenario, small_events, tmp_path, approvals)
    assert encode(first) == encode(second)
