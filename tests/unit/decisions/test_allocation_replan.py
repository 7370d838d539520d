"""Allocation with reserve re-plans on fresh stock when a concurrent order takes the units between the plan
and the reservation (the concurrent take is injected at exactly that point, on the real memory store)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from service.decisions.allocation import MAX_REPLANS, decide_allocation
from service.decisions.context import DecisionContext
from service.decisions.log import NullDecisionLog
from service.decisions.rules import FileRulesets
from service.decisions.schemas import AllocationRequest, DestinationIn, OrderLineIn
from service.masterdata import ItemRecord, LocationRecord, MasterData
from service.rules.language import parse_ruleset
from service.stock import (
    MemoryStockStore,
    ReservationLine,
    ReservationRequest,
    ReservationResult,
    SnapshotRow,
    StockStore,
)
from tests.contract.stock_backends import FakeClock, open_backend

RULESETS = FileRulesets(Path(__file__).resolve().parents[3] / "rulesets", "python")
MASTER = MasterData(
    locations={
        "near": LocationRecord("near", "store", "north", 53.80, -1.55, (), None, 1),
        **{
            f"dc-{i}": LocationRecord(f"dc-{i}", "dc", "south", 53.0 - i * 0.5, -1.55, (), None, 1)
            for i in range(MAX_REPLANS + 1)
        },
    },
    items={"TEE": ItemRecord("TEE", "apparel", 20.0, 8.0, 6, None, 5, None)},
    promotions=(),
)


class TakesFirst(MemoryStockStore):
    """The real memory store; before each of the first `times` reservations another order takes all the
    available stock of the locations the plan chose."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.times = times
        self.calls = 0

    async def reserve(self, request: ReservationRequest) -> ReservationResult:
        self.calls += 1
        if self.calls <= self.times:
            levels = await self.get_levels([line.sku for line in request.lines])
            lines = tuple(
                ReservationLine(line.sku, line.location, levels[line.sku][line.location].available)
                for line in request.lines
            )
            await super().reserve(
                ReservationRequest(f"rival-{self.calls}", "store", f"rival-{self.calls}", lines, 600)
            )
        return await super().reserve(request)


def tee_order() -> AllocationRequest:
    """Three TEE shipped north, reserved."""
    return AllocationRequest(
        order_id="o-1",
        channel="ecommerce",
        fulfillment="ship",
        lines=[OrderLineIn("TEE", 3)],
        destination=DestinationIn(53.80, -1.55, "north"),
        reserve=True,
    )


async def decide(store: MemoryStockStore) -> dict[str, Any]:
    ctx = DecisionContext(store, MASTER, RULESETS, NullDecisionLog(), datetime.now(UTC))
    return (await decide_allocation(ctx, tee_order(), "none")).decision


async def test_a_take_between_plan_and_reservation_leads_to_a_new_plan_on_fresh_stock() -> None:
    store = TakesFirst(times=1)
    await store.put_snapshot([SnapshotRow("TEE", "near", 5), SnapshotRow("TEE", "dc-0", 50)])
    decision = await decide(store)
    assert decision["replans"] == 1
    assert decision["reservation"]["lines"] == [{"sku": "TEE", "location": "dc-0", "qty": 3}]


async def test_re_planning_stops_after_the_bound_and_reserves_nothing() -> None:
    store = TakesFirst(times=MAX_REPLANS + 1)
    rows = [SnapshotRow("TEE", "near", 50)] + [
        SnapshotRow("TEE", f"dc-{i}", 50) for i in range(MAX_REPLANS + 1)
    ]
    await store.put_snapshot(rows)
    decision = await decide(store)
    assert decision["status"] == "unreserved"
    assert decision["reservation"] is None
    assert decision["replans"] == MAX_REPLANS
    levels = await store.get_levels(["TEE"])
    # only the rivals hold stock: one location emptied per attempt, and nothing of this order
    assert sum(level.reserved for level in levels["TEE"].values()) == 50 * (MAX_REPLANS + 1)


SHIPPED = Path(__file__).resolve().parents[3] / "rulesets"
TEXTS = [
    (SHIPPED / "allocation" / "channel-priority.yaml").read_text(),
    (SHIPPED / "availability" / "channel-availability.yaml").read_text(),
]


async def test_a_view_over_given_rulesets_answers_with_their_versions() -> None:
    view = FileRulesets.of([(parse_ruleset(text), 7) for text in TEXTS])
    ctx = DecisionContext(MemoryStockStore(), MASTER, view, NullDecisionLog(), datetime.now(UTC))
    request = AllocationRequest(
        order_id="o-2",
        channel="ecommerce",
        fulfillment="ship",
        lines=[OrderLineIn("TEE", 1)],
        destination=DestinationIn(53.80, -1.55, "north"),
    )
    record = await decide_allocation(ctx, request, "none")
    assert record.ruleset == {"name": "channel-priority", "version": 7, "sha256": record.ruleset["sha256"]}


class RivalFirstOnRedis:
    """The real Redis store, its reads counted; before its first reservation another order takes all the
    available stock of the locations the plan chose."""

    def __init__(self, store: StockStore) -> None:
        self.store = store
        self.reads = 0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def get_available(self, skus: list[str]) -> dict[str, dict[str, int]]:
        self.reads += 1
        return await self.store.get_available(skus)

    async def reserve(self, request: ReservationRequest) -> ReservationResult:
        self.calls += 1
        if self.calls == 1:
            levels = await self.store.get_levels([line.sku for line in request.lines])
            lines = tuple(
                ReservationLine(line.sku, line.location, levels[line.sku][line.location].available)
                for line in request.lines
            )
            await self.store.reserve(ReservationRequest("rival", "store", "rival", lines, 600))
        return await self.store.reserve(request)


async def test_on_redis_the_re_plan_starts_from_what_the_refusal_found(
    request: pytest.FixtureRequest,
) -> None:
    async with open_backend("redis", request, FakeClock()) as redis_store:
        await redis_store.put_snapshot([SnapshotRow("TEE", "near", 5), SnapshotRow("TEE", "dc-0", 50)])
        store = RivalFirstOnRedis(redis_store)
        ctx = DecisionContext(store, MASTER, RULESETS, NullDecisionLog(), datetime.now(UTC))  # type: ignore[arg-type]
        record = await decide_allocation(ctx, tee_order(), "rules")
        assert record.decision["replans"] == 1
        assert record.decision["reservation"]["lines"] == [{"sku": "TEE", "location": "dc-0", "qty": 3}]
        assert store.reads == 1  # the plan's read; the re-plan used the refusal's view
        assert record.inputs is not None and record.inputs["stock"] == {"TEE": {"near": 0, "dc-0": 50}}
