"""A simulated decision is the production decision: the same orders through the allocation use case
(`decide_allocation` on a real `MemoryStockStore`, with the same rulesets, reserving each plan) and
through a simulation run give the same facts, the same policy and reason from the rulesets, and the same
sources and quantities for every line; and the markdown reviews of a run, asked of the markdown use case
with the same stock, demand rate and season end, get the same decisions."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from service.decisions.allocation import decide_allocation, policy_view
from service.decisions.approvals import decide_markdown
from service.decisions.context import DecisionContext
from service.decisions.core import OrderFacts
from service.decisions.log import NullDecisionLog
from service.decisions.rules import FileRulesets
from service.decisions.schemas import (
    AllocationRequest,
    CustomerIn,
    DestinationIn,
    MarkdownRequest,
    OrderLineIn,
    RequesterIn,
)
from service.domain.allocation import AllocationPolicy, IndexedPicks
from service.domain.approval import ApprovalDecision
from service.domain.markdown import MarkdownRequest as DomainMarkdownRequest
from service.masterdata import ItemRecord, LocationRecord, MasterData
from service.stock import MemoryStockStore, SnapshotRow
from simulators.events import Event, Order
from simulators.generator import generate_events
from simulators.policy import PolicySet
from simulators.runner import Run
from simulators.scenario import Scenario, World
from simulators.versions import baseline, resolve

RULESETS = Path(__file__).resolve().parent / "rulesets"
SCENARIOS = Path(__file__).resolve().parents[3] / "simulators" / "scenarios"


def _world(scenario: Scenario) -> World:
    # promotions are calendar entries in the service and hourly multipliers in a run: left out here, so
    # both sides read the same facts
    return msgspec.structs.replace(scenario, promotions=[]).build()


def _master_data(world: World) -> MasterData:
    return MasterData(
        locations={
            loc.id: LocationRecord(
                loc.id,
                loc.type,
                loc.region,
                loc.lat,
                loc.lon,
                tuple(
                    c for c, on in (("pickup", loc.pickup), ("ship_from_store", loc.ship_from_store)) if on
                ),
                loc.daily_capacity,
                100,
            )
            for loc in world.locations
        },
        items={
            sku.id: ItemRecord(
                sku.id, sku.category, sku.price, sku.cost, sku.case_pack, None, sku.lead_time_days, None
            )
            for sku in world.skus
        },
        promotions=(),
    )


def _policies(versions: Any, kinds: tuple[str, ...]) -> PolicySet:
    full = versions.policy_set("python")
    return PolicySet(full.label, {k: full.deciders[k] for k in kinds}, full.refs)


def _simulated(world: World, orders: list[Event], policies: PolicySet) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    decider = policies.deciders["allocation"]

    def observe(
        order: Order,
        facts: OrderFacts,
        policy: AllocationPolicy,
        lines: list[tuple[int, int]],
        picks: IndexedPicks,
    ) -> None:
        out.append(
            {
                "order": order.id,
                "facts": facts.nested(),
                "policy": policy_view(policy),
                "reason": decider.decide(facts.nested()).get("reason"),
                "lines": [
                    {
                        "sku": world.skus[sku].id,
                        "allocations": [
                            {"location": world.locations[loc].id, "qty": q} for loc, q in line_picks
                        ],
                    }
                    for (sku, _), line_picks in zip(lines, picks, strict=True)
                ],
            }
        )

    run = Run(world, policies, view="realtime", observer=observe)
    run.run(orders)
    return out


async def _served(world: World, orders: list[Order], rulesets: FileRulesets) -> list[dict[str, Any]]:
    store = MemoryStockStore(clock=lambda: world.start)  # reservations are held for the whole replay
    await store.put_snapshot(
        [
            SnapshotRow(sku.id, loc.id, world.starting_stock[sku.id][loc.id])
            for sku in world.skus
            for loc in world.locations
            if world.starting_stock[sku.id][loc.id]
        ]
    )
    md = _master_data(world)
    out: list[dict[str, Any]] = []
    for order in orders:
        ctx = DecisionContext(
            store, md, rulesets, NullDecisionLog(), world.start + timedelta(seconds=order.at)
        )
        request = AllocationRequest(
            order_id=order.id,
            channel=order.channel,
            fulfillment=order.fulfillment,  # type: ignore[arg-type]
            lines=[OrderLineIn(line.sku, line.qty) for line in order.lines],
            destination=DestinationIn(order.lat, order.lon, order.region),
            pickup_location=order.store if order.fulfillment == "pickup" else None,
            reserve=True,
            customer=CustomerIn(order.tier),
        )
        record = await decide_allocation(ctx, request, "rules")
        assert record.trace is not None
        out.append(
            {
                "order": order.id,
                "facts": record.trace["facts"],
                "policy": record.trace["policy"],
                "reason": record.decision["reason"],
                "lines": [
                    {"sku": line["sku"], "allocations": line["allocations"]}
                    for line in record.decision["lines"]
                ],
            }
        )
    return out


@pytest.mark.parametrize("ruleset", [None, "nearest-anywhere.yaml", "dc-only.yaml"])
def test_the_same_orders_get_the_same_allocation_in_the_service_and_in_a_run(
    small_scenario: Scenario, ruleset: str | None
) -> None:
    world = _world(small_scenario)
    orders = [e for e in generate_events(world) if isinstance(e, Order)]
    shipped = baseline(small_scenario.rulesets, SCENARIOS)
    versions = resolve([str(RULESETS / ruleset)] if ruleset else [], shipped)[0]
    simulated = _simulated(world, list(orders), _policies(versions, ("allocation", "availability")))
    rulesets = FileRulesets.of(
        [(versions.rulesets[kind][0], 0) for kind in ("allocation", "availability")], "python"
    )
    served = asyncio.run(_served(world, orders, rulesets))
    assert len(served) == len(orders) > 300
    # the comparison can fail: orders are served, split and refused, and the stock runs short
    lines = [line for decision in served for line in decision["lines"]]
    assert any(not line["allocations"] for line in lines)
    sources = [{a["location"] for line in d["lines"] for a in line["allocations"]} for d in served]
    assert any(sources)
    if ruleset != "dc-only.yaml":  # one DC: nothing to split between
        assert any(len(found) > 1 for found in sources)
    assert simulated == served


async def _served_markdown(
    world: World, gathered: Mapping[str, Any], rulesets: FileRulesets
) -> dict[str, Any]:
    asked: DomainMarkdownRequest = gathered["request"]
    store = MemoryStockStore(clock=lambda: world.start)
    if gathered["units"]:  # the service reads the units left from live stock; where they are does not matter
        await store.put_snapshot([SnapshotRow(asked.sku, world.locations[0].id, gathered["units"])])
    md = _master_data(world)
    season_end = gathered["season_end"].isoformat()
    items = {**md.items, asked.sku: dataclasses.replace(md.items[asked.sku], season_end=season_end)}
    md = MasterData(md.locations, items, ())
    ctx = DecisionContext(store, md, rulesets, NullDecisionLog(), world.start)
    request = MarkdownRequest(
        markdown_id=asked.markdown_id,
        sku=asked.sku,
        current_price=asked.current_price,
        proposed_price=asked.proposed_price,
        requested_by=RequesterIn("simulated", asked.requested_by_role),
        effective_from=asked.effective_from,
        daily_rate=gathered["daily_rate"],
    )
    record = await decide_markdown(ctx, request, "none")
    return {k: v for k, v in record.decision.items() if k not in ("markdown_id", "sku")}


def test_the_same_markdown_reviews_get_the_same_decisions_in_the_service_and_in_a_run(
    small_scenario: Scenario,
) -> None:
    # every SKU is reviewed, whatever its weeks of supply
    markdowns = msgspec.structs.replace(small_scenario.markdowns, min_weeks_of_supply=0.0)
    world = _world(msgspec.structs.replace(small_scenario, markdowns=markdowns))
    versions = baseline(small_scenario.rulesets, SCENARIOS)
    seen: list[tuple[Mapping[str, Any], ApprovalDecision | None]] = []

    def decided(kind: str, gathered: Mapping[str, Any], decision: Any) -> None:
        if kind == "markdown":  # reorders raised are reported too
            seen.append((gathered, decision))

    Run(world, versions.policy_set("python"), decided=decided).run(generate_events(world))
    rulesets = FileRulesets.of([(versions.rulesets["markdown"][0], 0)], "python")
    assert len(seen) == len(world.skus)
    for gathered, decision in seen:
        assert decision is not None
        assert asyncio.run(_served_markdown(world, gathered, rulesets)) == decision.to_dict()
