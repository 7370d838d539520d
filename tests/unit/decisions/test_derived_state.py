"""What decisions derive from master data hangs off the snapshot it came from (`MasterData.derived`): made
once per snapshot, bounded, and never seen by a decision on another snapshot."""

from __future__ import annotations

import copy
import pickle
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from service.decisions.allocation import decide_allocation
from service.decisions.availability import SHARED_KEPT, TOTALS_KEPT, _Shared, _totals, decide_availability
from service.decisions.context import DecisionContext
from service.decisions.log import NullDecisionLog
from service.decisions.rules import FileRulesets
from service.decisions.schemas import AllocationRequest, AvailabilityRequest, DestinationIn, OrderLineIn
from service.domain.allocation import Allocator
from service.domain.availability import LocationPolicy, PreparedPolicies
from service.masterdata import DERIVED_KEPT, ItemRecord, LocationRecord, MasterData
from service.stock import MemoryStockStore, SnapshotRow
from service.stock.store import AvailableView

RULESETS = FileRulesets(Path(__file__).resolve().parents[3] / "rulesets", "python")
ITEMS = {"TEE": ItemRecord("TEE", "apparel", 20.0, 8.0, 6, None, 5, None)}


def _snapshot(near_lat: float) -> MasterData:
    return MasterData(
        locations={
            "near": LocationRecord("near", "dc", "north", near_lat, -1.55, (), None, 1),
            "mid": LocationRecord("mid", "dc", "north", 53.0, -1.55, (), None, 1),
        },
        items=ITEMS,
        promotions=(),
    )


def test_a_value_is_made_once_per_snapshot_and_kept_with_it() -> None:
    first, second = _snapshot(53.8), _snapshot(53.8)
    made: list[str] = []

    def make(name: str) -> str:
        made.append(name)
        return name

    assert first.derived("k", lambda: make("first")) == "first"
    assert first.derived("k", lambda: make("again")) == "first"
    assert second.derived("k", lambda: make("second")) == "second"
    assert made == ["first", "second"]


def test_a_snapshot_keeps_a_bounded_number_of_values_the_newest_last() -> None:
    md = _snapshot(53.8)
    for i in range(DERIVED_KEPT + 10):
        md.derived(("channel", i), lambda i=i: i)  # type: ignore[misc]
    made: list[int] = []
    assert md.derived(("channel", DERIVED_KEPT + 9), lambda: made.append(1)) == DERIVED_KEPT + 9
    assert made == []
    md.derived(("channel", 0), lambda: made.append(0))  # dropped long ago: made again
    assert made == [0]
    assert len(md._derived) <= DERIVED_KEPT


async def test_each_snapshot_allocates_over_its_own_locations() -> None:
    """The location `near` moves between two snapshots; the allocator kept with each sees its own."""
    store = MemoryStockStore()
    await store.put_snapshot([SnapshotRow("TEE", "near", 50), SnapshotRow("TEE", "mid", 50)])
    request = AllocationRequest(
        order_id="o-1",
        channel="ecommerce",
        fulfillment="ship",
        lines=[OrderLineIn("TEE", 3)],
        destination=DestinationIn(53.80, -1.55, "north"),
    )
    chosen = []
    for md in (_snapshot(53.8), _snapshot(50.0), _snapshot(53.8)):
        for _ in range(2):  # the second decision on a snapshot reuses what the first left with it
            ctx = DecisionContext(store, md, RULESETS, NullDecisionLog(), datetime.now(UTC))
            decision = (await decide_allocation(ctx, request, "none")).decision
            chosen.append(decision["lines"][0]["allocations"][0]["location"])
    assert chosen == ["near", "near", "mid", "mid", "near", "near"]


async def test_availability_answers_for_many_channels_stay_bounded_and_leave_the_allocator_alone() -> None:
    store = MemoryStockStore()
    await store.put_snapshot([SnapshotRow("TEE", "near", 50), SnapshotRow("TEE", "mid", 50)])
    md = _snapshot(53.8)
    request = AllocationRequest(
        order_id="o-1",
        channel="ecommerce",
        fulfillment="ship",
        lines=[OrderLineIn("TEE", 3)],
        destination=DestinationIn(53.80, -1.55, "north"),
    )
    ctx = DecisionContext(store, md, RULESETS, NullDecisionLog(), datetime.now(UTC))
    await decide_allocation(ctx, request, "none")
    allocator = md.derived(Allocator, lambda: None)
    assert isinstance(allocator, Allocator)
    for i in range(DERIVED_KEPT + 20):
        await decide_availability(ctx, AvailabilityRequest(channel=f"channel-{i}", skus=["TEE"]), "none")
    assert len(md.derived(_Shared, dict)) <= SHARED_KEPT
    assert md.derived(Allocator, lambda: None) is allocator


async def test_the_rules_trace_kept_for_a_list_of_skus_is_the_one_built_afresh() -> None:
    items = {**ITEMS, "MUG": ItemRecord("MUG", "home", 9.0, 3.0, 12, None, 5, None)}
    store = MemoryStockStore()
    await store.put_snapshot([SnapshotRow("TEE", "near", 50), SnapshotRow("MUG", "mid", 4)])

    def snapshot() -> MasterData:
        return MasterData(locations=_snapshot(53.8).locations, items=items, promotions=())

    async def trace(md: MasterData, skus: list[str]) -> list[dict[str, object]]:
        ctx = DecisionContext(store, md, RULESETS, NullDecisionLog(), datetime.now(UTC))
        record = await decide_availability(ctx, AvailabilityRequest(channel="ecommerce", skus=skus), "rules")
        assert record.trace is not None
        kept = record.trace["evaluations"]
        assert isinstance(kept, msgspec.Raw)  # encoded once, answered and logged as these bytes
        evaluations: list[dict[str, object]] = msgspec.json.decode(kept)
        return evaluations

    md = snapshot()
    tee, both = await trace(md, ["TEE"]), await trace(md, ["TEE", "MUG"])
    assert await trace(md, ["TEE"]) == tee == await trace(snapshot(), ["TEE"])
    assert await trace(md, ["TEE", "MUG"]) == both == await trace(snapshot(), ["TEE", "MUG"])
    assert both[: len(tee)] == tee and len(both) > len(tee)  # MUG's facts differ: evaluations of its own


def test_the_totals_of_a_shared_stock_answer_are_kept_with_it_per_prepared_policies() -> None:
    strict = PreparedPolicies.of(
        {
            "near": LocationPolicy(True, floor=2, low_stock_threshold=5),
            "mid": LocationPolicy(True, per_order_cap=4),
        }
    )
    loose = PreparedPolicies.of({"near": LocationPolicy(True), "mid": LocationPolicy(False)})
    view = AvailableView({"near": 6, "mid": 3})
    assert _totals(strict, view) == strict.totals({"near": 6, "mid": 3}) == (7, 4)
    assert _totals(loose, view) == (6, None)
    assert view.derived == {id(strict): (strict, (7, 4)), id(loose): (loose, (6, None))}
    view.derived[id(strict)] = (strict, (99, None))
    assert _totals(strict, view) == (99, None)  # kept: not summed again
    view.derived[id(loose)] = (strict, (1, 1))  # left by other policies (an id reused): not taken
    assert _totals(loose, view) == (6, None)
    plain = {"near": 6, "mid": 3}
    assert _totals(strict, plain) == (7, 4)  # a map a store made for one call: nothing kept
    many = [PreparedPolicies.of({"near": LocationPolicy(True, floor=i)}) for i in range(TOTALS_KEPT * 2)]
    assert [_totals(p, view)[0] for p in many] == [max(0, 6 - i) for i in range(TOTALS_KEPT * 2)]
    assert len(view.derived) <= TOTALS_KEPT


def test_a_shared_stock_answer_is_read_only() -> None:
    view = AvailableView({"near": 6})
    for change in (
        lambda: view.__setitem__("near", 1),
        lambda: view.__delitem__("near"),
        lambda: view.update(near=1),
        lambda: view.pop("near"),
        lambda: view.popitem(),
        lambda: view.setdefault("mid", 1),
        view.clear,
    ):
        with pytest.raises(TypeError):
            change()
    assert view == {"near": 6} and dict(view) == {"near": 6}
    view.derived["kept"] = 1
    for copied in (copy.copy(view), copy.deepcopy(view), pickle.loads(pickle.dumps(view))):
        assert isinstance(copied, AvailableView) and copied == view and copied.derived == {}
