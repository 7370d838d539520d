"""Reorder reviews in a run: what the demand rate counts, what a release moves, and the incremental review
that decides only the sku-locations whose inputs changed, checked against a review of every one."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.domain.reorder import ReorderDecision
from simulators.events import Event
from simulators.fairshare import StoreNeed, fair_shares
from simulators.generator import generate_events
from simulators.kpis import run_kpis
from simulators.runner import Run
from simulators.scenario import World, load_scenario, parse_scenario
from simulators.versions import baseline

from .conftest import SCENARIOS

Decided = list[tuple[str, str, int, dict[str, Any], ReorderDecision]]


def _small(**changes: Any) -> World:
    raw = yaml.safe_load((SCENARIOS / "small.yaml").read_text())
    for path, value in changes.items():
        node = raw
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return parse_scenario(yaml.safe_dump(raw)).build()


def _run(world: World, events: list[Event], *, full_review: bool = False) -> tuple[dict[str, Any], Decided]:
    decided: Decided = []

    def observe(kind: str, gathered: Any, decision: Any) -> None:
        if kind == "reorder" and decision.reorder:  # every review is reported; the raised ones are compared
            decided.append(
                (gathered["sku"], gathered["location"], gathered["at"], gathered["facts"], decision)
            )

    policies = baseline(world.scenario.rulesets, SCENARIOS).policy_set("python")
    result = Run(world, policies, decided=observe, full_review=full_review).run(events)
    return run_kpis(result), decided


@pytest.mark.parametrize("scenario", ["small-every-4h", "weekend-promo"])
def test_the_incremental_review_decides_as_a_review_of_every_sku_location(scenario: str) -> None:
    if scenario == "weekend-promo":
        world = load_scenario(SCENARIOS / "weekend-promo.yaml").build()
    else:
        world = _small(**{"replenishment.review_every_hours": 4})
    events = generate_events(world)
    incremental, decided_incremental = _run(world, events)
    full, decided_full = _run(world, events, full_review=True)
    assert decided_incremental  # reorders were raised, with their facts and decisions
    assert decided_incremental == decided_full
    # what the rulesets were asked differs (the point of it); every other number is the same
    asked = [run.pop("evaluations")["reorder"] for run in (incremental, full)]
    assert incremental == full
    assert sum(asked[0].values()) < sum(asked[1].values())


def test_a_store_sku_with_no_demand_gets_no_presentation_stock() -> None:
    # a SKU nobody buys: the shipped presentation rule (one case for slow movers) needs demand.known
    world = _small(**{"skus": [
        {"id": "TOY-1", "category": "toys", "price": 29.99, "cost": 12.0, "case_pack": 6, "popularity": 3,
         "stock": {"store": 8, "dc": 240}},
        {"id": "SLOW", "category": "home", "price": 19.0, "cost": 8.0, "case_pack": 6, "popularity": 1e-9,
         "stock": {"store": 0, "dc": 120}},
    ]})  # fmt: skip
    events = generate_events(world)
    assert not any(getattr(e, "sku", None) == "SLOW" for e in events)
    _, decided = _run(world, events)
    assert decided
    assert not [d for d in decided if d[0] == "SLOW"]
    for _, _, _, facts, _ in decided:
        if not facts["demand"]["known"]:
            assert facts["position"]["projected"] <= 0


def _empty_dc() -> World:
    """The small scenario with an empty DC whose purchase orders take longer than the run to arrive."""
    raw = yaml.safe_load((SCENARIOS / "small.yaml").read_text())
    for sku in raw["skus"]:
        sku["lead_time_days"] = 10
        sku["stock"] = {**sku.get("stock", {}), "dc": 0}
    raw["inbound"] = []
    return parse_scenario(yaml.safe_dump(raw)).build()


def test_a_dcs_demand_rate_counts_what_its_stores_asked_of_it() -> None:
    world = _empty_dc()
    kpis, decided = _run(world, generate_events(world))
    replen = world.scenario.replenishment
    every = int(replen.review_every_hours * 3600)
    reviews = round(replen.demand_window_hours / replen.review_every_hours)  # the window, in reviews
    assert reviews == 2
    asked: dict[tuple[str, datetime], int] = {}
    for sku, location, at, _, decision in decided:
        if location != "DC-1" and not decision.review:
            asked[sku, at] = asked.get((sku, at), 0) + decision.qty
    dc_rates = [
        (sku, at, facts["demand"]["daily_rate"]) for sku, loc, at, facts, _ in decided if loc == "DC-1"
    ]
    assert any(rate > 0 for _, _, rate in dc_rates)
    for sku, at, rate in dc_rates:
        # the empty DC sells nothing itself: its demand is what the stores asked at the reviews of the
        # window before this one (they are reviewed after the DC)
        units = sum(asked.get((sku, at - timedelta(seconds=i * every)), 0) for i in range(1, reviews + 1))
        assert rate == round(units / (reviews * every / 86400), 2)
    # the stores' releases found nothing to move: counted as unfilled, not released
    k = kpis["kpis"]
    assert k["reorders_unfilled"] > 0
    assert k["reorder_units_moved"] == 0
    assert k["reorder_units_short"] > 0
    assert k["reorders_released"] == sum(
        1 for _, loc, _, _, d in decided if loc == "DC-1" and d.reorder and not d.review
    )
    assert (
        k["reorder_units"] == k["reorder_units_ordered"] == k["reorder_units_on_order"] == k["on_order_units"]
    )


def test_released_units_are_moved_and_arrive(small_world: World, small_events: list[Event]) -> None:
    kpis, _ = _run(small_world, small_events)
    k = kpis["kpis"]
    assert k["reorder_units_moved"] > 0
    assert k["reorder_units"] == k["reorder_units_moved"] + k["reorder_units_ordered"]
    # what was released either arrived or is on its way at the end
    assert k["reorder_units"] == k["reorder_units_received"] + k["reorder_units_on_order"]
    assert k["reorders_raised"] == k["reorders_released"] + k["reorders_for_review"] + k["reorders_unfilled"]


def test_replenishment_can_be_turned_off_from_the_command_line(tmp_path: Path) -> None:
    import json

    from simulators.cli import main

    out = tmp_path / "off"
    args = [str(SCENARIOS / "small.yaml"), "--out", str(out), "--no-progress", "--no-replenishment"]
    assert main(["simulate", *args]) == 0
    runs = json.loads((out / "kpis.json").read_text())["runs"]
    assert runs and all(run["kpis"]["reorders_raised"] == 0 for run in runs)
    assert all("reorder" not in run["decisions"] for run in runs)


class _Watched(Run):
    """A run that notes, at every fill of the stores' orders of a SKU by a DC: the DC's spare stock, its own
    channels' demand rate, the orders and what each store got."""

    fills: list[tuple[int, float, list[StoreNeed], list[int]]]

    def _fill_store_orders(self, orders: Any, at: int) -> None:
        groups: dict[tuple[int, int], list[Any]] = {}
        for order in orders:
            groups.setdefault((order.sku, order.source), []).append(order)
        before = {key: self.available[key[0]][key[1]] for key in groups}
        transit = {(o.sku, o.loc): self.stock.in_transit[o.sku][o.loc] for o in orders}
        super()._fill_store_orders(orders, at)
        for (sku, source), group in groups.items():
            own = self.dc_own_rate.get(sku * self.width + source, 0.0)
            got = [self.stock.in_transit[sku][o.loc] - transit[sku, o.loc] for o in group]
            assert sum(got) == before[sku, source] - self.available[sku][source]
            self.fills.append((before[sku, source], own, [o.need for o in group], got))


def test_a_short_dc_shares_its_stock_between_the_stores_that_ordered() -> None:
    # a DC with little stock: its stores' orders exceed what it has (the shipped DC transfer floor is 0)
    raw = yaml.safe_load((SCENARIOS / "small.yaml").read_text())
    for sku in raw["skus"]:
        sku["lead_time_days"] = 10
        sku["stock"] = {**sku.get("stock", {}), "dc": 40}
    raw["inbound"] = []
    world = parse_scenario(yaml.safe_dump(raw)).build()
    policies = baseline(world.scenario.rulesets, SCENARIOS).policy_set("python")
    run = _Watched(world, policies)
    run.fills = []
    result = run.run(generate_events(world))
    assert result.conservation["holds"]
    short = [f for f in run.fills if sum(n.qty for n in f[2]) > f[0]]
    assert short  # some review's orders exceeded the DC's stock
    for spare, own, needs, got in run.fills:
        assert all(0 <= g <= n.qty for g, n in zip(got, needs, strict=True))
        assert sum(got) <= max(0, spare)
        # each store got its fair share against the DC's own channels (all it ordered when they fit)
        assert got == fair_shares(spare, own, needs)
    # the shares were cut: a store got less than it ordered while the DC kept stock for its own channels
    assert any(own > 0 and 0 < sum(got) < sum(n.qty for n in needs) for _, own, needs, got in short)


def test_stores_do_not_reorder_a_promoted_item_while_its_promotion_runs() -> None:
    world = load_scenario(SCENARIOS / "weekend-promo.yaml").build()
    decisions: list[tuple[str, dict[str, Any], ReorderDecision]] = []

    def observe(kind: str, gathered: Any, decision: Any) -> None:
        if kind == "reorder":
            decisions.append((gathered["location"], gathered["facts"], decision))

    policies = baseline(world.scenario.rulesets, SCENARIOS).policy_set("python")
    Run(world, policies, decided=observe).run(generate_events(world))
    running = [(loc, d) for loc, facts, d in decisions if facts["promo"]["active"]]
    assert any(loc.startswith("DC-") and d.reorder for loc, d in running)  # the DCs still order
    assert not [d for loc, d in running if not loc.startswith("DC-") and d.reorder]
    # outside the promotion stores do reorder
    assert any(not loc.startswith("DC-") and d.reorder for loc, _, d in decisions)
