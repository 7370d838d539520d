"""What one run holds: the world's tables by index, the run's stock view (`RunStock`), its schedule and its
counts, and how it asks the rulesets for a policy.

The facts every decision reads are built by `service.decisions.core` (the builders the HTTP use cases call)
from the run's world: the scenario is the master data, the hour's promotions the promotion calendar. The
rulesets answer through the run's `PolicySet`; what an answer depends on is kept here per run, so a
run evaluates each distinct set of facts once.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from datetime import datetime
from typing import Any

from service.decisions.core import OrderFacts, PreparedPolicies, availability_facts, order_fact_key
from service.domain.allocation import AllocationPolicy, Allocator, Network
from service.domain.allocation import Location as DomainLocation
from service.domain.availability import LocationPolicy
from service.domain.reorder import ReorderDecision
from simulators.counts import ChannelCounts, HourCounts, RunCounts
from simulators.generator import promo_active
from simulators.policy import PolicySet, RuleDecider
from simulators.scenario import Location, World
from simulators.stock import RunStock

# told of a reorder, transfer or markdown decision: its kind, what the run gathered for it, the decision
DecisionObserver = Callable[[str, Mapping[str, Any], Any], None]

# kinds of scheduled work, in the order they run when due at the same second
COMMIT, DISPOSE, ARRIVE, PO_ARRIVE, SYNC, REVIEW, TRANSFERS, MARKDOWNS, DAY, APPROVED = range(10)


class RunState:
    """One replay of one stream with one version set and one stock-view mode: its tables and state."""

    def __init__(self, world: World, policies: PolicySet, *, view: str = "configured") -> None:
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
        # from the order's `OrderFacts`; None when the ruleset has no memo (every decision evaluates) or
        # declares a fact `order_fact_key` cannot pick.
        self._policies: dict[Hashable, AllocationPolicy] | None = None
        self._policy_key: Callable[[OrderFacts], Hashable] = tuple
        if isinstance(allocation, RuleDecider) and allocation.memo:
            key = order_fact_key(allocation.paths)
            if key is not None:
                self._policies = {}
                self._policy_key = key
        self._interned: dict[AllocationPolicy, AllocationPolicy] = {}
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
            [loc.daily_capacity for loc in world.locations],
        )
        # live availability (sellable - reserved): the store core's own rows, kept in step by the core
        self.available = self.stock.available
        # the allocator keeps the locations of each SKU in order of these rows, told of every change
        self.stock.watch(self.allocator.track(self.available))
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
        # the SKUs some promotion names (by id or category); every other SKU's rows are one shared row of
        # False, so that a large catalogue with a few promoted SKUs costs no per-hour work
        promoted = [
            s
            for s, sku in enumerate(world.skus)
            if any(sku.id in p.skus or sku.category in p.categories for p in scenario.promotions)
        ]
        never = [False] * len(hours)
        # promo[channel][sku][hour]: a promotion of that SKU runs in that channel during that hour
        self._promo: list[list[list[bool]]] = [[never] * len(self.sku_ids) for _ in self.channel_ids]
        self._promo_any: list[list[bool]] = [never] * len(self.sku_ids)
        for s in promoted:
            for c, channel_id in enumerate(self.channel_ids):
                self._promo[c][s] = [self._promo_in(s, channel_id, h) for h in hours]
            self._promo_any[s] = [
                any(self._promo[c][s][h] for c in range(len(self.channel_ids))) for h in hours
            ]
        # each promoted SKU's promotion windows, [start, end): the calendar its reorder facts are read from
        self.promo_windows: dict[int, list[tuple[datetime, datetime]]] = {}
        for s in promoted:
            sku = world.skus[s]
            self.promo_windows[s] = [
                (p.start, p.end)
                for p in scenario.promotions
                if sku.id in p.skus or sku.category in p.categories
            ]
        # low-stock threshold per location from the availability decision, or None, keyed
        # `(channel * skus + sku) * 2 + promo` (`_threshold_key`)
        self._thresholds: dict[int, list[int] | None] = {}
        self._location_policies: dict[tuple[str, str, float, str, str, bool], LocationPolicy] = {}
        # (channel, sku, promo) -> the SKU's availability policies prepared for summing
        self._prepared: dict[tuple[int, int, bool], PreparedPolicies] = {}
        self.sold_window = [[0] * len(self.loc_ids) for _ in self.sku_ids]
        self.lost_window = [[0] * len(self.loc_ids) for _ in self.sku_ids]
        self.sold_all = [0] * len(self.sku_ids)
        # purchase orders released and not yet arrived, per (sku, location): part of the inbound position
        self.on_order_at = [[0] * len(self.loc_ids) for _ in self.sku_ids]
        # The reorder review's inputs besides the position, keyed `sku * width + location`: till demand an
        # empty shelf refused, and units the stores asked of a DC, since the sku-location's last review;
        # the sku-locations that have had any demand (`demand.known`).
        self.width = len(self.loc_ids)
        self.refused_window: dict[int, int] = {}
        self.drawn_window: dict[int, int] = {}
        self.demand_known: set[int] = set()
        # the sku-locations whose review inputs changed since the last review: every position change (kept
        # by the stock view), refused demand, purchase orders released
        self.review_dirty: set[int] = set()
        self.stock.touched = self.review_dirty
        # True: every review decides every sku-location (the reference the incremental review equals)
        self.full_review = False
        self.reviewed = False
        # sku-locations to review again at the next review although nothing marks them: their demand rate
        # was not 0 (the window restarts, so it changes), or they raised a reorder that may have changed no
        # position (sent to review, unfilled), which a review of the same inputs raises again
        self.review_again: set[int] = set()
        # the promotion flags each promoted SKU was last reviewed with
        self.review_flags: dict[int, tuple[bool, bool, bool]] = {}
        # DC-to-store replenishment units on their way
        self.replenishing = 0
        replen = scenario.replenishment
        # The demand window is a whole number of review intervals (at least one): the demand of each of the
        # last `window_reviews - 1` intervals is kept per sku-location while any of it is not 0.
        self.window_reviews = max(1, round(replen.demand_window_hours / max(replen.review_every_hours, 1e-9)))
        self.window_days = self.window_reviews * replen.review_every_hours / 24.0
        self.window_history: dict[int, list[int]] = {}
        # a DC's own channels' units over the window (its demand less what its stores asked), kept as
        # `window_history` is, and their daily rate at the current review per DC key (absent: 0)
        self.own_history: dict[int, list[int]] = {}
        self.dc_own_rate: dict[int, float] = {}
        self.store_lead_days = max(0, math.ceil(replen.store_lead_time_hours / 24))
        # reorder decisions by everything their facts are built from (None: the reorder ruleset has its
        # memo off, so that every review evaluates it)
        reorder = policies.get("reorder")
        self.reorder_decisions: dict[tuple[Any, ...], ReorderDecision] | None = (
            None if isinstance(reorder, RuleDecider) and not reorder.memo else {}
        )
        self.shipped: dict[str, list[tuple[int, int, int]]] = {}
        self.queue: list[tuple[int, int, int, Any]] = []
        # Reservation commits, one lane per delay (a pickup's, a shipment's): orders come in time order, so
        # each lane fills in the queue's order and is read from its head; `_due_until` takes the earliest of
        # the queue and the lanes. A commit that would land before its lane's last goes to the queue.
        self.commit_lanes: dict[int, deque[tuple[int, int, int, Any]]] = {3600: deque(), 7200: deque()}
        self._seq = 0
        self.order_decisions = 0
        self.decided: DecisionObserver | None = None

    def _promo_in(self, sku: int, channel: str, hour: int) -> bool:
        return promo_active(self.world, self.world.skus[sku], channel, hour + 0.5)

    def _allocation_policy(self, facts: OrderFacts) -> AllocationPolicy:
        """The allocation ruleset's policy for an order's facts."""
        cache = self._policies
        if cache is None:
            return self.allocation.decide_as(facts.nested(), AllocationPolicy.from_result)
        key = self._policy_key(facts)
        found = cache.get(key)
        if found is None:
            found = self.allocation.decide_as(facts.nested(), AllocationPolicy.from_result)
            # equal policies as one object: the allocator's per-order look-up then matches by identity
            found = cache[key] = self._interned.setdefault(found, found)
        else:
            # the ruleset's own memo would answer from the same values: count it as it would
            self.allocation.memo_hits += 1
        return found

    def _location_policy(self, channel_id: str, sku: int, location: Location, promo: bool) -> LocationPolicy:
        """The availability decision for a channel, SKU and location, once per distinct set of its facts."""
        key = (channel_id, self.category[sku], self.price[sku], location.type, location.region, promo)
        found = self._location_policies.get(key)
        if found is None:
            decider = self.policies.get("availability")
            assert decider is not None
            facts = availability_facts(channel_id, *key[1:])
            found = decider.decide_as(facts, LocationPolicy.from_result)
            self._location_policies[key] = found
        return found

    def _threshold_key(self, channel: int, sku: int, promo: bool) -> int:
        return (channel * len(self.sku_ids) + sku) * 2 + promo

    def _threshold_row(self, channel: int, sku: int, promo: bool) -> list[int] | None:
        """Low-stock thresholds of a SKU per location for a channel, as the allocation use case reads them
        from the availability ruleset; None when they are all zero."""
        key = self._threshold_key(channel, sku, promo)
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

    def _prepared_policies(self, channel: int, sku: int, promo: bool) -> PreparedPolicies:
        """The availability policies of a SKU at every location for a channel, made ready for summing."""
        key = (channel, sku, promo)
        found = self._prepared.get(key)
        if found is None:
            channel_id = self.channel_ids[channel]
            found = self._prepared[key] = PreparedPolicies.of(
                {
                    location.id: self._location_policy(channel_id, sku, location, promo)
                    for location in self.locations
                }
            )
        return found

    def _commit_later(self, at: int, delay: int, payload: Any) -> None:
        """Schedule a reservation's commit `delay` seconds after `at` (the order's time)."""
        self._seq += 1
        item = (at + delay, COMMIT, self._seq, payload)
        lane = self.commit_lanes[delay]
        if not lane or lane[-1][0] <= item[0]:
            lane.append(item)
        else:
            heapq.heappush(self.queue, item)

    def _schedule(self, at: int, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self.queue, (at, kind, self._seq, payload))

    def _count_decision(self, kind: str, n: int = 1) -> None:
        self.counts.decisions[kind] = self.counts.decisions.get(kind, 0) + n
