"""Replay an event stream through the decision code, once per ruleset version set, and count what happens.

A run owns an isolated `MemoryStockStore` (through `simulators.stock.RunStock`, which drives the store's
synchronous core) holding the scenario's starting stock, and walks the event stream in time order, interleaved with the work the run itself schedules (reservation commits, return
dispositions, transfers and replenishments arriving, batch syncs of stale channels, reorder reviews,
transfer checks and markdown reviews, hourly samples):

- an order from a real-time channel is sourced by the allocation decision (`service.domain.allocation`'s
  `Allocator`, the one allocation path, which `allocate` runs too) against live availability and reserved at once; what cannot be sourced is a lost sale;
- an order from a batch-synced channel is accepted against that channel's copy of availability, taken at
  its last sync (through the availability decision) and lowered only by its own sales; what it accepted
  is then sourced against live stock, and what cannot be sourced is oversold;
- a till sale takes what the store has on hand, the rest is a lost sale;
- reorder reviews, store transfers and markdown proposals go through their rulesets and domain code.

Everything is synchronous and deterministic: the same stream and rulesets give the same counts.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from operator import itemgetter
from types import MappingProxyType
from typing import Any

from service.domain.allocation import UNLIMITED, AllocationPolicy, Allocator, IndexedPicks, Network
from service.domain.allocation import Location as DomainLocation
from service.domain.approval import ApprovalDecision, Requester, apply_approval
from service.domain.availability import LocationPolicy, sellable_at
from service.domain.cases import chain_above, escalate
from service.domain.errors import PolicyError
from service.domain.markdown import MarkdownRequest, markdown_facts
from service.domain.reorder import Position, ReorderPolicy, decide_reorder, reorder_facts
from service.domain.transfer import TRANSFER_CHAIN, TransferRequest, TransferSide, transfer_facts
from simulators.events import Event, Order, Receipt, Return, Sale
from simulators.generator import promo_multiplier
from simulators.policy import PolicySet, RuleDecider
from simulators.scenario import Location, World
from simulators.stock import RunStock

ProgressFn = Callable[[int, int], None]

# kinds of scheduled work, in the order they run when due at the same second
_COMMIT, _DISPOSE, _ARRIVE, _PO_ARRIVE, _SYNC, _REVIEW, _TRANSFERS, _MARKDOWNS, _DAY, _APPROVED = range(10)


@dataclass
class ChannelCounts:
    orders: int = 0
    units_demanded: int = 0
    units_allocated: int = 0
    lost_units: int = 0
    oversold_units: int = 0
    orders_complete: int = 0
    split_orders: int = 0
    shipments: int = 0
    distance_km: float = 0.0
    revenue: float = 0.0


@dataclass
class HourCounts:
    orders: int = 0
    units_demanded: int = 0
    units_allocated: int = 0
    lost_units: int = 0
    oversold_units: int = 0
    available_end: int = 0


@dataclass
class RunCounts:
    transfers_requested: int = 0
    transfers_approved: int = 0
    transfers_routed: int = 0
    transfers_rejected: int = 0
    transfers_executed: int = 0
    transfers_expired: int = 0
    transfers_blocked: int = 0
    approval_cycle_hours: list[float] = field(default_factory=list)
    markdowns_proposed: int = 0
    markdowns_approved: int = 0
    markdowns_routed: int = 0
    markdowns_rejected: int = 0
    reorders_raised: int = 0
    reorders_released: int = 0
    reorders_for_review: int = 0
    reorder_units: int = 0
    returns_applied: int = 0
    returns_ignored: int = 0
    receipts_ignored: int = 0
    orders_ignored: int = 0
    syncs: int = 0
    decisions: dict[str, int] = field(default_factory=dict)


@dataclass
class RunResult:
    label: str
    view: str
    rulesets: dict[str, Any]
    channels: dict[str, ChannelCounts]
    hours: list[HourCounts]
    counts: RunCounts
    conservation: dict[str, int | bool]
    stock_end: dict[str, int]
    open_reservations: int
    on_order_units: int
    order_decisions: int
    evaluations: dict[str, dict[str, int]]


# the facts of an allocation decision, flat (the order value unrounded), in the order `_allocation_facts`
# reads them (a read-only view: the module holds no state)
_ALLOCATION_FACTS: Mapping[tuple[str, ...], int] = MappingProxyType(
    {
        ("order", "channel"): 0,
        ("order", "fulfillment"): 1,
        ("order", "region"): 2,
        ("order", "value"): 3,
        ("order", "line_count"): 4,
        ("order", "units"): 5,
        ("promo", "active"): 6,
        ("customer", "tier"): 7,
    }
)


def _allocation_facts(flat: tuple[Any, ...]) -> dict[str, Any]:
    """The allocation facts of an order, as the allocation use case builds them."""
    channel, fulfillment, region, value, line_count, units, promo, tier = flat
    return {
        "order": {
            "channel": channel,
            "fulfillment": fulfillment,
            "region": region,
            "value": round(value, 2),
            "line_count": line_count,
            "units": units,
        },
        "promo": {"active": promo},
        "customer": {"tier": tier},
    }


_positive = (0).__lt__


def _no_key(flat: tuple[Any, ...]) -> tuple[()]:
    return ()


class Run:
    """One replay of one stream with one version set and one stock-view mode."""

    def __init__(
        self,
        world: World,
        policies: PolicySet,
        *,
        view: str = "configured",
    ) -> None:
        self.world = world
        self.policies = policies
        # approvers' response times: one stream per run, the same for every version compared
        self._approval_rng = random.Random(f"{world.scenario.seed}:approvals")
        allocation = policies.get("allocation")
        if allocation is None:
            raise ValueError("a run needs an allocation decider")
        self.allocation = allocation
        self.view = view
        # The allocation policy per combination of the fact values the ruleset declares, picked straight
        # from the order's facts in `_ALLOCATION_FACTS` order; None when the ruleset has no memo (every
        # decision evaluates) or declares a fact outside those.
        self._policies: dict[Any, AllocationPolicy] | None = None
        self._policy_key: Callable[[tuple[Any, ...]], Any] = tuple
        if isinstance(allocation, RuleDecider) and allocation.memo:
            positions = [_ALLOCATION_FACTS.get(path) for path in allocation.paths]
            # the order value is kept unrounded in the flat facts, so a ruleset reading it goes the long way
            if None not in positions and _ALLOCATION_FACTS[("order", "value")] not in positions:
                self._policies = {}
                if positions:
                    self._policy_key = itemgetter(*[p for p in positions if p is not None])
                else:
                    self._policy_key = _no_key
        scenario = world.scenario
        self.sku_ids = [sku.id for sku in world.skus]
        self.sku_index = {sku_id: i for i, sku_id in enumerate(self.sku_ids)}
        self.loc_ids = [loc.id for loc in world.locations]
        self.loc_index = {loc_id: i for i, loc_id in enumerate(self.loc_ids)}
        self.locations = world.locations
        domain_locations = [
            DomainLocation(
                loc.id,
                loc.type,
                loc.region,
                loc.lat,
                loc.lon,
                frozenset(
                    c for c, on in (("pickup", loc.pickup), ("ship_from_store", loc.ship_from_store)) if on
                ),
                None,
            )
            for loc in world.locations
        ]
        self.network = Network(domain_locations)
        self.allocator = Allocator(
            self.network, [i for i, loc in enumerate(world.locations) if loc.daily_capacity is not None]
        )
        self.stock = RunStock(
            self.sku_ids,
            self.loc_ids,
            [[world.starting_stock[s][loc] for loc in self.loc_ids] for s in self.sku_ids],
        )
        # live availability (sellable - reserved): the store core's own rows, kept in step by the core
        self.available = self.stock.available
        # the allocator keeps the locations of each SKU in order of these rows, told of every change
        self.stock.watch(self.allocator.track(self.available))
        self.capacity_per_day = [
            UNLIMITED if loc.daily_capacity is None else loc.daily_capacity for loc in world.locations
        ]
        self.capacity = list(self.capacity_per_day)
        self.channel_ids = [c.id for c in world.channels]
        self.channel_index = {c: i for i, c in enumerate(self.channel_ids)}
        self.batch: list[bool] = [view == "configured" and c.view.mode == "batch" for c in world.channels]
        self.sync_every = [c.view.sync_every_hours or 0.0 for c in world.channels]
        self.stale_totals: list[list[int] | None] = [None] * len(world.channels)
        self.stale_caps: list[list[int | None] | None] = [None] * len(world.channels)
        self.hours_total = scenario.duration_hours
        self.hours = [HourCounts() for _ in range(self.hours_total)]
        self.channels = {c: ChannelCounts() for c in self.channel_ids}
        self.counts = RunCounts()
        self.price = [sku.price for sku in world.skus]
        self.cost = [sku.cost for sku in world.skus]
        self.category = [sku.category for sku in world.skus]
        self.regions = sorted({loc.region for loc in world.locations})
        self.region_dc: dict[str, int | None] = {}
        for region in self.regions:
            dcs = [i for i, loc in enumerate(world.locations) if loc.type == "dc" and loc.region == region]
            any_dc = [i for i, loc in enumerate(world.locations) if loc.type == "dc"]
            self.region_dc[region] = dcs[0] if dcs else (any_dc[0] if any_dc else None)
        hours = range(self.hours_total + 1)
        # promo[channel][sku][hour]: a promotion of that SKU runs in that channel during that hour
        self._promo: list[list[list[bool]]] = [
            [[self._promo_in(s, c, h) for h in hours] for s in range(len(self.sku_ids))]
            for c in self.channel_ids
        ]
        self._promo_any: list[list[bool]] = [
            [any(self._promo[c][s][h] for c in range(len(self.channel_ids))) for h in hours]
            for s in range(len(self.sku_ids))
        ]
        # (channel, sku, promo) -> low-stock threshold per location from the availability decision, or None
        self._thresholds: dict[tuple[int, int, bool], list[int] | None] = {}
        self._location_policies: dict[tuple[str, str, float, str, str, bool], LocationPolicy] = {}
        self.sold_window = [[0] * len(self.loc_ids) for _ in self.sku_ids]
        self.lost_window = [[0] * len(self.loc_ids) for _ in self.sku_ids]
        self.sold_all = [0] * len(self.sku_ids)
        # purchase orders released and not yet arrived, per (sku, location): part of the inbound position
        self.on_order_at = [[0] * len(self.loc_ids) for _ in self.sku_ids]
        self.shipped: dict[str, list[tuple[int, int, int]]] = {}
        self.queue: list[tuple[int, int, int, Any]] = []
        self._seq = 0
        self.order_decisions = 0

    # -----------------------------------------------------------------------------------------------------
    # helpers

    def _promo_in(self, sku: int, channel: str, hour: int) -> bool:
        return promo_multiplier(self.world, self.world.skus[sku], channel, hour + 0.5) > 1.0

    def _location_policy(self, channel_id: str, sku: int, location: Location, promo: bool) -> LocationPolicy:
        """The availability decision for a channel, SKU and location, once per distinct set of its facts."""
        key = (channel_id, self.category[sku], self.price[sku], location.type, location.region, promo)
        found = self._location_policies.get(key)
        if found is None:
            decider = self.policies.get("availability")
            assert decider is not None
            facts = {
                "request": {"channel": channel_id},
                "item": {"category": self.category[sku], "price": self.price[sku]},
                "location": {"type": location.type, "region": location.region},
                "promo": {"active": promo},
            }
            found = decider.decide_as(facts, LocationPolicy.from_result)
            self._location_policies[key] = found
        return found

    def _threshold_row(self, channel: int, sku: int, promo: bool) -> list[int] | None:
        """Low-stock thresholds of a SKU per location for a channel, as the allocation use case reads them
        from the availability ruleset; None when they are all zero."""
        key = (channel, sku, promo)
        if key in self._thresholds:
            return self._thresholds[key]
        decider = self.policies.get("availability")
        row: list[int] | None = None
        if decider is not None:
            values = []
            for location in self.locations:
                policy = self._location_policy(self.channel_ids[channel], sku, location, promo)
                values.append(policy.low_stock_threshold)
            row = values if any(values) else None
        self._thresholds[key] = row
        return row

    def _schedule(self, at: int, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self.queue, (at, kind, self._seq, payload))

    def _count_decision(self, kind: str) -> None:
        self.counts.decisions[kind] = self.counts.decisions.get(kind, 0) + 1

    # -----------------------------------------------------------------------------------------------------
    # the run

    def run(self, events: Sequence[Event], progress: ProgressFn | None = None) -> RunResult:
        scenario = self.world.scenario
        horizon = self.hours_total * 3600
        for c, every in enumerate(self.sync_every):
            if self.batch[c]:
                self._schedule(0, _SYNC, (c, int(every * 3600)))
        replen = scenario.replenishment
        if replen.enabled and self.policies.get("reorder") is not None:
            self._schedule(int(replen.review_every_hours * 3600), _REVIEW, None)
        transfers = scenario.transfers
        if transfers.enabled and self.policies.get("transfer") is not None:
            self._schedule(int(transfers.check_every_hours * 3600), _TRANSFERS, None)
        markdowns = scenario.markdowns
        if markdowns.enabled and self.policies.get("markdown") is not None:
            for at_hours in markdowns.at_hours:
                self._schedule(int(at_hours * 3600), _MARKDOWNS, None)
        for day in range(1, math.ceil(self.hours_total / 24) + 1):
            self._schedule(day * 86400, _DAY, None)

        total = len(events)
        step = max(1, total // 200)
        hour = 0
        queue = self.queue
        for n, event in enumerate(events):
            at = event.at
            if at >= horizon or at < 0:
                self.counts.orders_ignored += isinstance(event, Order)
                continue
            while queue and queue[0][0] <= at:
                self._due(heapq.heappop(queue))
            while (hour + 1) * 3600 <= at:
                self._close_hour(hour)
                hour += 1
            if isinstance(event, Order):
                self._order(event, hour)
            elif isinstance(event, Sale):
                self._sale(event, hour)
            elif isinstance(event, Return):
                self._return(event)
            elif isinstance(event, Receipt):
                self._receipt(event)
            if progress is not None and n % step == 0:
                progress(n, total)
        while queue and queue[0][0] < horizon:
            self._due(heapq.heappop(queue))
        while hour < self.hours_total:
            self._close_hour(hour)
            hour += 1
        if progress is not None:
            progress(total, total)
        return self._result()

    def _close_hour(self, hour: int) -> None:
        self.hours[hour].available_end = sum(sum(filter(_positive, row)) for row in self.available)

    def _due(self, item: tuple[int, int, int, Any]) -> None:
        at, kind, _, payload = item
        if kind == _COMMIT:
            order_id, lines = payload
            self.stock.commit(lines)
            self.shipped[order_id] = lines
        elif kind == _DISPOSE:
            sku, loc, qty, restock = payload
            self.stock.return_disposition(sku, loc, qty, restock)
        elif kind == _ARRIVE:
            sku, loc, qty = payload
            self.stock.transfer_in(sku, loc, qty)
        elif kind == _PO_ARRIVE:
            sku, loc, qty = payload
            self.on_order_at[sku][loc] -= qty
            self.stock.receipt(sku, loc, qty)
        elif kind == _SYNC:
            channel, every = payload
            self._sync(channel, at)
            if every > 0:
                self._schedule(at + every, _SYNC, payload)
        elif kind == _REVIEW:
            self._review(at)
            every = int(self.world.scenario.replenishment.review_every_hours * 3600)
            self._schedule(at + every, _REVIEW, None)
        elif kind == _TRANSFERS:
            self._transfers(at)
            every = int(self.world.scenario.transfers.check_every_hours * 3600)
            self._schedule(at + every, _TRANSFERS, None)
        elif kind == _MARKDOWNS:
            self._markdowns(at)
        elif kind == _DAY:
            self.capacity = list(self.capacity_per_day)
        elif kind == _APPROVED:
            self._approved_transfer(at, payload)

    # -----------------------------------------------------------------------------------------------------
    # orders and sales

    def _order(self, order: Order, hour: int) -> None:
        channel = self.channel_index.get(order.channel)
        sku_index = self.sku_index
        price = self.price
        if channel is None:
            self.counts.orders_ignored += 1
            return
        promo_row = self._promo[channel]
        lines: list[tuple[int, int]] = []
        demanded = 0
        value = 0.0
        promo = False
        for line in order.lines:
            sku = sku_index.get(line.sku)
            qty = line.qty
            if sku is None or qty <= 0:
                continue
            lines.append((sku, qty))
            demanded += qty
            value += price[sku] * qty
            if not promo and promo_row[sku][hour]:
                promo = True
        if not lines:
            self.counts.orders_ignored += 1
            return
        pickup = self.loc_index.get(order.store, -1) if order.store else -1
        if order.fulfillment == "pickup" and pickup < 0:
            self.counts.orders_ignored += 1
            return
        self.order_decisions += 1
        counts = self.channels[order.channel]
        hour_counts = self.hours[hour]
        counts.orders += 1
        counts.units_demanded += demanded
        hour_counts.orders += 1
        hour_counts.units_demanded += demanded
        flat = (
            order.channel,
            order.fulfillment,
            order.region,
            value,
            len(lines),
            demanded,
            promo,
            order.tier,
        )
        cache = self._policies
        if cache is None:
            policy = self.allocation.decide_as(_allocation_facts(flat), AllocationPolicy.from_result)
        else:
            key = self._policy_key(flat)
            found = cache.get(key)
            if found is None:
                policy = cache[key] = self.allocation.decide_as(
                    _allocation_facts(flat), AllocationPolicy.from_result
                )
            else:
                # the ruleset's own memo would answer from the same values: count it as it would
                self.allocation.memo_hits += 1
                policy = found
        batch = self.batch[channel]
        accepted = lines
        wanted = demanded
        if batch:
            accepted = self._accept_stale(channel, lines)
            wanted = 0
            for _, qty in accepted:
                wanted += qty
            lost = demanded - wanted
            counts.lost_units += lost
            hour_counts.lost_units += lost
            if not accepted:
                return
        thresholds: list[list[int] | None] | None = None
        known = self._thresholds
        for index, (sku, _) in enumerate(accepted):
            key = (channel, sku, promo_row[sku][hour])
            row = known[key] if key in known else self._threshold_row(*key)
            if row is not None:
                if thresholds is None:
                    thresholds = [None] * len(accepted)
                thresholds[index] = row
        picks = self._plan(
            accepted, self.available, self.capacity, policy, order.fulfillment, pickup, order.lat, order.lon,
            thresholds,
        )  # fmt: skip
        reservation_lines: list[tuple[int, int, int]] = []
        allocated = 0
        for (sku, _), line_picks in zip(accepted, picks, strict=True):
            for loc, qty in line_picks:
                reservation_lines.append((sku, loc, qty))
                allocated += qty
        short = wanted - allocated
        if batch:
            counts.oversold_units += short
            hour_counts.oversold_units += short
        else:
            counts.lost_units += short
            hour_counts.lost_units += short
        if not reservation_lines:
            return
        if not self.stock.reserve(reservation_lines):  # the plan was made on live stock: cannot happen
            raise RuntimeError(f"order {order.id}: reservation refused for a plan made on live stock")
        capacity = self.capacity
        sold_window = self.sold_window
        sold_all = self.sold_all
        revenue = 0.0
        first = reservation_lines[0][1]
        split = False
        for sku, loc, qty in reservation_lines:
            capacity[loc] -= qty
            revenue += price[sku] * qty
            sold_window[sku][loc] += qty
            sold_all[sku] += qty
            if loc != first:
                split = True
        counts.units_allocated += allocated
        hour_counts.units_allocated += allocated
        counts.revenue += revenue
        distances = self.network.distances(order.lat, order.lon)
        if split:
            locations = {loc for _, loc, _ in reservation_lines}
            counts.split_orders += 1
            counts.shipments += len(locations)
            for loc in sorted(locations):
                counts.distance_km += distances[loc]
        else:
            counts.shipments += 1
            counts.distance_km += distances[first]
        if short == 0 and wanted == demanded:
            counts.orders_complete += 1
        self._seq += 1
        delay = 3600 if order.fulfillment == "pickup" else 7200
        heapq.heappush(self.queue, (order.at + delay, _COMMIT, self._seq, (order.id, reservation_lines)))

    def _plan(
        self,
        lines: Sequence[tuple[int, int]],
        available: Sequence[Sequence[int]],
        capacity: Sequence[int],
        policy: AllocationPolicy,
        fulfillment: str,
        pickup: int,
        lat: float,
        lon: float,
        thresholds: Sequence[Sequence[int] | None] | None,
    ) -> IndexedPicks:
        """Where each line comes from: `service.domain.allocation`'s `Allocator` (which `allocate` runs
        too), with the run's live availability and remaining daily capacity."""
        return self.allocator.plan(
            lines, available, capacity, policy, fulfillment, pickup, lat, lon, thresholds
        )

    def _accept_stale(self, channel: int, lines: list[tuple[int, int]]) -> list[tuple[int, int]]:
        totals = self.stale_totals[channel]
        caps = self.stale_caps[channel]
        if totals is None or caps is None:
            return []
        accepted: list[tuple[int, int]] = []
        for sku, qty in lines:
            limit = totals[sku]
            cap = caps[sku]
            if cap is not None and cap < limit:
                limit = cap
            take = qty if qty <= limit else limit
            if take > 0:
                totals[sku] -= take
                accepted.append((sku, take))
        return accepted

    def _sync(self, channel: int, at: int) -> None:
        """Give a batch channel a fresh copy of what it may sell, through the availability decision."""
        self.counts.syncs += 1
        decider = self.policies.get("availability")
        channel_id = self.channel_ids[channel]
        hour = min(at // 3600, self.hours_total)
        totals: list[int] = []
        caps: list[int | None] = []
        for sku in range(len(self.sku_ids)):
            promo = self._promo[channel][sku][hour]
            total = 0
            cap: int | None = None
            row = self.available[sku]
            for loc, location in enumerate(self.locations):
                if decider is None:
                    total += max(0, row[loc])
                    continue
                self._count_decision("availability")
                policy = self._location_policy(channel_id, sku, location, promo)
                if not policy.eligible:
                    continue
                total += sellable_at(row[loc], policy.floor, policy.low_stock_threshold)
                if policy.per_order_cap is not None:
                    cap = policy.per_order_cap if cap is None else min(cap, policy.per_order_cap)
            totals.append(total)
            caps.append(cap)
        self.stale_totals[channel] = totals
        self.stale_caps[channel] = caps

    def _sale(self, sale: Sale, hour: int) -> None:
        sku = self.sku_index.get(sale.sku)
        loc = self.loc_index.get(sale.store)
        counts = self.channels.get(sale.channel)
        if sku is None or loc is None or counts is None:
            self.counts.orders_ignored += 1
            return
        hour_counts = self.hours[hour]
        counts.orders += 1
        counts.units_demanded += sale.qty
        hour_counts.orders += 1
        hour_counts.units_demanded += sale.qty
        on_shelf = self.available[sku][loc]
        take = sale.qty if sale.qty <= on_shelf else max(0, on_shelf)
        lost = sale.qty - take
        counts.lost_units += lost
        hour_counts.lost_units += lost
        self.lost_window[sku][loc] += lost
        if take:
            self.stock.sale(sku, loc, take)
            counts.units_allocated += take
            hour_counts.units_allocated += take
            counts.revenue += self.price[sku] * take
            counts.orders_complete += lost == 0
            self.sold_window[sku][loc] += take
            self.sold_all[sku] += take
            self.shipped[sale.id] = [(sku, loc, take)]

    def _return(self, event: Return) -> None:
        sku = self.sku_index.get(event.sku)
        if sku is None:
            self.counts.returns_ignored += 1
            return
        loc: int | None = None
        qty = event.qty
        if event.order_id is not None:
            sent = [(loc_, q) for s, loc_, q in self.shipped.get(event.order_id, []) if s == sku]
            if not sent:
                self.counts.returns_ignored += 1  # nothing of it was ever sent
                return
            loc = sent[0][0]
            qty = min(qty, sum(q for _, q in sent))
        elif event.location is not None:
            loc = self.loc_index.get(event.location)
        if loc is None:
            self.counts.returns_ignored += 1
            return
        self.counts.returns_applied += 1
        self.stock.return_in(sku, loc, qty)
        after = int(self.world.scenario.returns.disposition_after_hours * 3600)
        self._schedule(event.at + after, _DISPOSE, (sku, loc, qty, event.restock))

    def _receipt(self, event: Receipt) -> None:
        sku = self.sku_index.get(event.sku)
        loc = self.loc_index.get(event.location)
        if sku is None or loc is None or event.qty <= 0:
            self.counts.receipts_ignored += 1
            return
        self.stock.receipt(sku, loc, event.qty)

    # -----------------------------------------------------------------------------------------------------
    # replenishment, transfers, markdowns

    def _review(self, at: int) -> None:
        decider = self.policies.get("reorder")
        if decider is None:
            return
        replen = self.world.scenario.replenishment
        window_days = max(replen.demand_window_hours, 1.0) / 24.0
        hour = min(at // 3600, self.hours_total)
        stock = self.stock
        store_lead_days = max(0, math.ceil(replen.store_lead_time_hours / 24))
        convert = ReorderPolicy.from_result
        for sku, info in enumerate(self.world.skus):
            promo = self._promo_any[sku][hour]
            upcoming = any(self._promo_any[sku][h] for h in range(hour, min(hour + 72, self.hours_total + 1)))
            sellable, reserved = stock.sellable[sku], stock.reserved[sku]
            in_transit, return_pending = stock.in_transit[sku], stock.return_pending[sku]
            sold = self.sold_window[sku]
            on_order = self.on_order_at[sku]
            for loc, location in enumerate(self.locations):
                lead_days = info.lead_time_days if location.type == "dc" else store_lead_days
                # inbound: transfers on their way (the ledger's in_transit) and purchase orders not yet arrived
                inbound = in_transit[loc] + on_order[loc]
                position = Position(sellable[loc], reserved[loc], inbound, return_pending[loc])
                facts = reorder_facts(
                    position,
                    daily_rate=round(sold[loc] / window_days, 2),
                    lead_time_days=lead_days,
                    case_pack=info.case_pack,
                    price=info.price,
                    cost=info.cost,
                    category=info.category,
                    location_type=location.type,
                    promo_active=promo,
                    promo_upcoming=upcoming,
                )
                self._count_decision("reorder")
                policy = decider.decide_as(facts, convert)
                decision = decide_reorder(position, policy, info.case_pack)
                if not decision.reorder:
                    continue
                self.counts.reorders_raised += 1
                if decision.review:
                    self.counts.reorders_for_review += 1
                    continue
                self.counts.reorders_released += 1
                self._release_reorder(sku, loc, decision.qty, at)
        for row in self.sold_window:
            for loc in range(len(row)):
                row[loc] = 0

    def _release_reorder(self, sku: int, loc: int, qty: int, at: int) -> None:
        location = self.locations[loc]
        if location.type == "dc":
            # a purchase order: the units exist nowhere in the network until they arrive
            self.on_order_at[sku][loc] += qty
            self.counts.reorder_units += qty
            self._schedule(at + self.world.skus[sku].lead_time_days * 86400, _PO_ARRIVE, (sku, loc, qty))
            return
        source = self.region_dc.get(location.region)
        if source is None:
            return
        qty = min(qty, max(0, self.available[sku][source]))
        if qty <= 0:
            return
        self.counts.reorder_units += qty
        self.stock.transfer_out(sku, source, loc, qty)
        hours = self.world.scenario.replenishment.store_lead_time_hours
        self._schedule(at + int(hours * 3600), _ARRIVE, (sku, loc, qty))

    def _transfers(self, at: int) -> None:
        """Stores that lost sales since the last check ask a same-region store for units."""
        decider = self.policies.get("transfer")
        if decider is None:
            return
        spec = self.world.scenario.transfers
        hour = min(at // 3600, self.hours_total)
        by_region: dict[str, list[int]] = {}
        for loc, location in enumerate(self.locations):
            if location.type == "store":
                by_region.setdefault(location.region, []).append(loc)
        for sku in range(len(self.sku_ids)):
            promos = 1 if self._promo_any[sku][hour] else 0
            lost_row = self.lost_window[sku]
            row = self.available[sku]
            for dest, lost in enumerate(lost_row):
                if lost <= 0 or row[dest] > spec.below_units:
                    continue
                region = self.locations[dest].region
                peers = [p for p in by_region.get(region, []) if p != dest]
                if not peers:
                    continue
                source = max(peers, key=lambda p: (row[p], -p))
                if row[source] <= 0:
                    continue
                qty = spec.qty
                self.counts.transfers_requested += 1
                src, dst = self.locations[source], self.locations[dest]
                request = TransferRequest(f"T{self.counts.transfers_requested}", self.sku_ids[sku], qty,
                                          "lost_sales", spec.requested_by)  # fmt: skip
                facts = transfer_facts(
                    request,
                    TransferSide(src.id, src.type, src.region, row[source], promos),
                    TransferSide(dst.id, dst.type, dst.region, row[dest], promos),
                    source_floor=0,
                    unit_value=self.price[sku],
                )
                self._count_decision("transfer")
                result = decider.decide(facts)
                outcome = str(result.get("outcome", "route"))
                if outcome == "approve" and row[source] >= qty:
                    self.counts.transfers_approved += 1
                    self.counts.transfers_executed += 1
                    self.stock.transfer_out(sku, source, dest, qty)
                    self._schedule(at + int(spec.transit_hours * 3600), _ARRIVE, (sku, dest, qty))
                elif outcome == "reject" or outcome == "approve":
                    self.counts.transfers_rejected += 1
                else:
                    self.counts.transfers_routed += 1
                    if self.world.scenario.approvals.enabled:
                        self._route_transfer(at, result, (sku, source, dest, qty))
            for dest in range(len(lost_row)):
                lost_row[dest] = 0

    def _route_transfer(self, at: int, result: Any, move: tuple[int, int, int, int]) -> None:
        """Run a routed transfer through its approval case: approvers answer after their sampled response
        times, a level past its SLA escalates, past the chain's end the request expires."""
        role = self.world.scenario.transfers.requested_by
        try:
            decision = apply_approval(result, Requester("simulated", role), TRANSFER_CHAIN)
        except PolicyError:
            self.counts.transfers_expired += 1
            return
        if decision.outcome != "route":
            self.counts.transfers_rejected += 1
            return
        hours = self._approval_hours(decision, role)
        if hours is None:
            self.counts.transfers_expired += 1
            return
        self._schedule(at + int(hours * 3600), _APPROVED, (*move, hours))

    def _approval_hours(self, decision: ApprovalDecision, requester_role: str) -> float | None:
        spec = self.world.scenario.approvals
        approvers = list(decision.approvers)
        chain = list(chain_above(approvers, decision.escalation, TRANSFER_CHAIN, requester_role))
        sla = decision.sla_hours
        elapsed = 0.0
        while True:
            draws = sorted(
                self._approval_rng.expovariate(
                    1.0 / max(1e-9, spec.mean_response_hours.get(role, spec.default_mean_response_hours))
                )
                for role in approvers
                for _ in range(1 if decision.approval == "all" else decision.approvals_required)
            )
            # all of the roles: the slowest answers last; any: the required number of the quickest
            answered = draws[-1] if decision.approval == "all" else draws[decision.approvals_required - 1]
            if sla is None or answered <= sla:
                return elapsed + answered
            elapsed += sla
            above = escalate(approvers, chain)
            if above is None:
                return None
            approvers, chain = above

    def _approved_transfer(self, at: int, payload: tuple[int, int, int, int, float]) -> None:
        """An approved transfer re-checks the source on live stock, then moves or is blocked."""
        sku, source, dest, qty, hours = payload
        self.counts.transfers_approved += 1
        if self.available[sku][source] < qty:
            self.counts.transfers_blocked += 1
            return
        self.counts.transfers_executed += 1
        self.counts.approval_cycle_hours.append(round(hours, 4))
        self.stock.transfer_out(sku, source, dest, qty)
        self._schedule(
            at + int(self.world.scenario.transfers.transit_hours * 3600), _ARRIVE, (sku, dest, qty)
        )

    def _markdowns(self, at: int) -> None:
        """Propose a markdown on SKUs with many weeks of supply left at the current sales pace."""
        decider = self.policies.get("markdown")
        if decider is None:
            return
        spec = self.world.scenario.markdowns
        hour = min(at // 3600, self.hours_total)
        elapsed_days = max(at / 86400, 1 / 24)
        day = (self.world.start + timedelta(seconds=at)).date()
        season_end = day + timedelta(days=spec.season_days_to_end)
        for sku, info in enumerate(self.world.skus):
            units = sum(max(0, v) for v in self.stock.sellable[sku])
            daily = self.sold_all[sku] / elapsed_days
            weeks = units / (daily * 7) if daily > 0 else math.inf
            if weeks < spec.min_weeks_of_supply:
                continue
            proposed = round(info.price * (1 - spec.depth), 2)
            if proposed <= 0 or proposed >= info.price:
                continue
            self.counts.markdowns_proposed += 1
            request = MarkdownRequest(f"M{self.counts.markdowns_proposed}", info.id, info.price, proposed,
                                      day, spec.requested_by)  # fmt: skip
            facts = markdown_facts(
                request,
                cost=info.cost,
                category=info.category,
                units=units,
                daily_rate=daily,
                season_end=season_end,
                promo_active=self._promo_any[sku][hour],
            )
            self._count_decision("markdown")
            outcome = str(decider.decide(facts).get("outcome", "route"))
            if outcome == "approve":
                self.counts.markdowns_approved += 1
            elif outcome == "reject":
                self.counts.markdowns_rejected += 1
            else:
                self.counts.markdowns_routed += 1

    # -----------------------------------------------------------------------------------------------------

    def _result(self) -> RunResult:
        stock_end: dict[str, int] = {}
        for loc_type in sorted({loc.type for loc in self.locations}):
            stock_end[loc_type] = sum(
                self.stock.sellable[s][i]
                for s in range(len(self.sku_ids))
                for i, loc in enumerate(self.locations)
                if loc.type == loc_type
            )
        if self.order_decisions:
            self.counts.decisions["allocation"] = self.order_decisions
        evaluations = {
            kind: {"evaluations": decider.evaluations, "memo_hits": decider.memo_hits}
            for kind, decider in sorted(self.policies.deciders.items())
        }
        return RunResult(
            label=self.policies.label,
            view=self.view,
            rulesets=self.policies.describe(),
            channels=self.channels,
            hours=self.hours,
            counts=self.counts,
            conservation=self.stock.conservation(),
            stock_end=stock_end,
            open_reservations=self.stock.open_reservations,
            on_order_units=sum(map(sum, self.on_order_at)),
            order_decisions=self.order_decisions,
            evaluations=evaluations,
        )


def run_once(
    world: World,
    events: Sequence[Event],
    policies: PolicySet,
    *,
    view: str = "configured",
    progress: ProgressFn | None = None,
) -> RunResult:
    return Run(world, policies, view=view).run(events, progress)
