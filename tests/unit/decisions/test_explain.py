"""The candidate table of an allocation logged at the default trace, recomputed from what it recorded: the
same table the full trace records on the same stock, and a clear word when it cannot be, or may differ."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.decisions.allocation import decide_allocation
from service.decisions.context import DecisionContext, TraceLevel
from service.decisions.explain import (
    LOCATIONS_CHANGED,
    NOT_RECORDED,
    NOT_TRACED,
    PLAN_DIFFERS,
    recompute_candidates,
)
from service.decisions.log import NullDecisionLog
from service.decisions.rules import FileRulesets
from service.decisions.schemas import AllocationRequest, DestinationIn, OrderLineIn
from service.masterdata import ItemRecord, LocationRecord, MasterData
from service.stock import (
    CapacityClaim,
    CapacityLimit,
    MemoryStockStore,
    ReservationLine,
    ReservationRequest,
    SnapshotRow,
)

RULESETS = FileRulesets(Path(__file__).resolve().parents[3] / "rulesets", "python")
ITEMS = {
    "TEE": ItemRecord("TEE", "apparel", 20.0, 8.0, 6, None, 5, None),
    "MUG": ItemRecord("MUG", "homeware", 12.0, 4.0, 12, None, 7, None),
}
NORTH = DestinationIn(53.80, -1.55, "north")


def _snapshot(near_lat: float = 53.8) -> MasterData:
    return MasterData(
        locations={
            "near": LocationRecord("near", "dc", "north", near_lat, -1.55, (), None, 1),
            "far": LocationRecord("far", "dc", "south", 51.5, -0.12, (), None, 1),
            "shop": LocationRecord(
                "shop", "store", "north", 53.79, -1.54, ("ship_from_store", "pickup"), 5, 2
            ),
            "corner": LocationRecord("corner", "store", "north", 53.95, -1.08, ("pickup",), None, 2),
        },
        items=ITEMS,
        promotions=(),
    )


async def _store() -> MemoryStockStore:
    store = MemoryStockStore()
    await store.put_snapshot(
        [
            SnapshotRow("TEE", "near", 4),
            SnapshotRow("TEE", "far", 40),
            SnapshotRow("TEE", "shop", 9),
            SnapshotRow("TEE", "corner", 3),  # below the stores' low-stock threshold
            SnapshotRow("MUG", "shop", 6),
        ]
    )
    # another order already took some of the shop's daily capacity
    today = datetime.now(UTC).date().isoformat()
    await store.reserve(
        ReservationRequest(
            "other",
            "ecommerce",
            "k-other",
            (ReservationLine("MUG", "shop", 3),),
            900,
            capacity=CapacityClaim(today, (CapacityLimit("shop", 5),)),
        )
    )
    return store


def _order(
    channel: str, lines: list[tuple[str, int]], fulfillment: str = "ship", **more: Any
) -> AllocationRequest:
    destination = NORTH if fulfillment != "pickup" else None
    return AllocationRequest(
        order_id=f"o-{channel}-{fulfillment}",
        channel=channel,
        fulfillment=fulfillment,  # type: ignore[arg-type]
        lines=[OrderLineIn(sku, qty) for sku, qty in lines],
        destination=destination,
        **more,
    )


async def _decide(
    store: MemoryStockStore, md: MasterData, request: AllocationRequest, trace: TraceLevel
) -> Any:
    ctx = DecisionContext(store, md, RULESETS, NullDecisionLog(), datetime.now(UTC))
    return await decide_allocation(ctx, request, trace)


async def test_the_recomputed_table_is_the_one_the_full_trace_records_on_the_same_stock() -> None:
    store, md = await _store(), _snapshot()
    orders = [
        _order("ecommerce", [("TEE", 2)]),
        _order("ecommerce", [("TEE", 30), ("MUG", 2)]),
        _order("marketplace", [("TEE", 1)]),
        _order("ecommerce", [("TEE", 1)], "pickup", pickup_location="corner"),
        _order("ecommerce", [("TEE", 500)]),  # cannot be served: every candidate explained all the same
    ]
    for request in orders:
        default = await _decide(store, md, request, "rules")
        full = await _decide(store, md, request, "full")
        assert "candidates" not in default.trace
        recomputed = recompute_candidates(default.logged(), md)
        assert recomputed.missing is None and recomputed.notes == []
        assert recomputed.candidates == full.trace["candidates"]
        assert default.decision["lines"] == full.decision["lines"]


async def test_what_the_default_trace_records_is_what_the_plan_read() -> None:
    store, md = await _store(), _snapshot()
    default = await _decide(store, md, _order("ecommerce", [("TEE", 2), ("MUG", 1)]), "rules")
    inputs = default.logged()["inputs"]
    assert inputs["stock"] == await store.get_available(["TEE", "MUG"])
    assert inputs["capacity_used"] == {"shop": 3}  # what the other order took of the shop's day
    assert inputs["low_stock"]["TEE"]["corner"] > 3  # why `corner` gives nothing
    assert "inputs" not in default.response()  # logged, not answered


async def test_a_decision_without_a_trace_or_logged_before_inputs_cannot_be_recomputed() -> None:
    store, md = await _store(), _snapshot()
    untraced = await _decide(store, md, _order("ecommerce", [("TEE", 2)]), "none")
    assert recompute_candidates(untraced.logged(), md).missing == NOT_TRACED
    older = (await _decide(store, md, _order("ecommerce", [("TEE", 2)]), "rules")).logged()
    del older["inputs"]
    found = recompute_candidates(older, md)
    assert found.missing == NOT_RECORDED and found.candidates == []


async def test_a_change_of_locations_since_the_decision_is_said() -> None:
    store = await _store()
    default = (await _decide(store, _snapshot(), _order("ecommerce", [("TEE", 2)]), "rules")).logged()
    assert default["decision"]["lines"][0]["allocations"][0]["location"] == "near"
    nudged = recompute_candidates(default, _snapshot(53.81))  # `near` moved a little: the same choice
    assert nudged.notes == [LOCATIONS_CHANGED] and nudged.candidates
    moved = recompute_candidates(default, _snapshot(60.0))  # `near` is far now: another choice
    assert moved.notes == [LOCATIONS_CHANGED, PLAN_DIFFERS]


async def test_a_plan_that_no_longer_comes_out_the_same_is_said() -> None:
    store, md = await _store(), _snapshot()
    default = (await _decide(store, md, _order("ecommerce", [("TEE", 2)]), "rules")).logged()
    assert default["decision"]["lines"][0]["allocations"][0]["location"] == "near"
    default["inputs"]["stock"]["TEE"]["near"] = 0  # as if the record said otherwise than the plan read
    assert PLAN_DIFFERS in recompute_candidates(default, md).notes


async def test_a_sku_unknown_today_is_named() -> None:
    store, md = await _store(), _snapshot()
    default = (await _decide(store, md, _order("ecommerce", [("MUG", 1)]), "rules")).logged()
    today = MasterData(locations=md.locations, items={"TEE": ITEMS["TEE"]}, promotions=())
    found = recompute_candidates(default, today)
    assert found.missing is not None and "MUG" in found.missing
