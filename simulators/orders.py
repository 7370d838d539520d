"""Orders, till sales and batch syncs of a run.

An order is decided as the allocation use case decides it: its facts by `OrderFacts` (the use case's
builder), the policy from the allocation ruleset, the low-stock thresholds from the availability ruleset,
the plan by the allocator (`Allocator.plan`, the core `allocate` runs too) on the run's live stock, the
units to hold by `held_lines`, held through the run's stock view. What the run adds is the world around
the decision: which orders arrive, what a batch-synced channel accepts on its stale copy of availability
(that copy is the availability decision taken at its last sync), and the counting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from service.decisions.core import OrderFacts, held_lines
from service.domain.allocation import AllocationPolicy, IndexedPicks
from simulators.events import Order, Sale
from simulators.state import RunState

# told of every order decided: the order, its facts, the policy, the lines decided as (sku index, qty) and
# their picks as (location index, qty)
OrderObserver = Callable[[Order, OrderFacts, AllocationPolicy, list[tuple[int, int]], IndexedPicks], None]


_make_facts = tuple.__new__


class Orders(RunState):
    observer: OrderObserver | None = None

    def _order(self, order: Order, hour: int) -> None:
        channel = self.channel_index.get(order.channel)
        sku_index = self.sku_index
        price = self.price
        if channel is None:
            self.counts.skip("order", "bad_channel")
            return
        promo_row = self._promo[channel]
        lines: list[tuple[int, int]] = []
        demanded = 0
        value = 0.0
        promo = False
        dropped = 0
        for line in order.lines:
            sku = sku_index.get(line.sku)
            qty = line.qty
            if sku is None or qty <= 0:
                dropped += 1
                continue
            lines.append((sku, qty))
            demanded += qty
            value += price[sku] * qty
            if not promo and promo_row[sku][hour]:
                promo = True
        if not lines:
            self.counts.skip("order", "unknown_sku")
            return
        if dropped:
            self.counts.skipped.setdefault("order_line", {}).setdefault("unknown_sku", 0)
            self.counts.skipped["order_line"]["unknown_sku"] += dropped
        pickup = self.loc_index.get(order.store, -1) if order.store else -1
        if order.fulfillment == "pickup" and pickup < 0:
            self.counts.skip("order", "unknown_location")
            return
        self.order_decisions += 1
        counts = self.channels[order.channel]
        hour_counts = self.hours[hour]
        counts.orders += 1
        counts.units_demanded += demanded
        hour_counts.orders += 1
        hour_counts.units_demanded += demanded
        # `OrderFacts` made as the tuple it is, without the Python-level constructor (the hot path)
        facts: OrderFacts = _make_facts(
            OrderFacts,
            (order.channel, order.fulfillment, order.region, value, len(lines), demanded, promo, order.tier),
        )
        cache = self._policies
        policy = None if cache is None else cache.get(self._policy_key(facts))
        if policy is None:
            policy = self._allocation_policy(facts)
        else:  # the ruleset's own memo would answer from the same values: count it as it would
            self.allocation.memo_hits += 1
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
            if lost:
                self._count_short(False, lines, accepted, order, pickup)
            if not accepted:
                return
        thresholds: list[list[int] | None] | None = None
        known = self._thresholds
        base = channel * len(sku_index)
        for index, (sku, _) in enumerate(accepted):
            on = promo_row[sku][hour]
            key = (base + sku) * 2 + on  # `_threshold_key`
            row = known[key] if key in known else self._threshold_row(channel, sku, on)
            if row is not None:
                if thresholds is None:
                    thresholds = [None] * len(accepted)
                thresholds[index] = row
        stock = self.stock
        # where each line comes from: `service.domain.allocation`'s `Allocator` (which `allocate` runs too),
        # with the run's live availability and remaining daily capacity
        picks = self.allocator.plan(
            accepted, self.available, stock.capacity, policy, order.fulfillment, pickup, order.lat, order.lon,
            thresholds,
        )  # fmt: skip
        if self.observer is not None:
            self.observer(order, facts, policy, accepted, picks)
        held = held_lines(accepted, picks)
        if held and not stock.reserve(held):  # the plan was made on live stock: cannot happen
            raise RuntimeError(f"order {order.id}: reservation refused for a plan made on live stock")
        sold_window = self.sold_window
        sold_all = self.sold_all
        allocated = 0
        revenue = 0.0
        first = held[0][1] if held else -1
        split = False
        for sku, loc, qty in held:
            allocated += qty
            revenue += price[sku] * qty
            sold_window[sku][loc] += qty
            sold_all[sku] += qty
            if loc != first:
                split = True
        short = wanted - allocated
        if batch:
            counts.oversold_units += short
            hour_counts.oversold_units += short
        else:
            counts.lost_units += short
            hour_counts.lost_units += short
        if short:
            self._count_short(batch, accepted, held, order, pickup)
        if not held:
            return
        counts.units_allocated += allocated
        hour_counts.units_allocated += allocated
        counts.revenue += revenue
        distances = self.network.distances(order.lat, order.lon)
        if split:
            locations = {loc for _, loc, _ in held}
            counts.split_orders += 1
            counts.shipments += len(locations)
            for loc in sorted(locations):
                counts.distance_km += distances[loc]
        else:
            counts.shipments += 1
            counts.distance_km += distances[first]
        if short == 0 and wanted == demanded:
            counts.orders_complete += 1
        self._commit_later(order.at, 3600 if order.fulfillment == "pickup" else 7200, (order.id, held))

    def _count_short(
        self,
        oversold: bool,
        wanted: Sequence[tuple[int, int]],
        got: Sequence[tuple[int, int] | tuple[int, int, int]],
        order: Order,
        pickup: int,
    ) -> None:
        """Count per SKU the units of `wanted` that `got` (lines or held lines, quantity last) lacks: at the
        pickup store for a click-and-collect order, in the order's region always."""
        missing: dict[int, int] = {}
        for sku, qty in wanted:
            missing[sku] = missing.get(sku, 0) + qty
        for item in got:
            missing[item[0]] -= item[-1]
        location = self.loc_ids[pickup] if order.fulfillment == "pickup" and pickup >= 0 else None
        shortfalls = self.counts.shortfalls
        for sku, units in missing.items():
            if units > 0:
                shortfalls.add(oversold, self.sku_ids[sku], location, order.region, units)

    def _accept_stale(self, channel: int, lines: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """What a batch-synced channel accepts of an order: each line up to what its copy of availability
        still shows (lowered by its own sales since the sync) and the per-order cap it was given."""
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
        """Give a batch channel a fresh copy of what it may sell: the availability decision of every SKU
        (`PreparedPolicies.totals`, as the availability use case sums it) on live stock."""
        self.counts.syncs += 1
        decider = self.policies.get("availability")
        hour = min(at // 3600, self.hours_total)
        loc_ids = self.loc_ids
        totals: list[int] = []
        caps: list[int | None] = []
        for sku in range(len(self.sku_ids)):
            row = self.available[sku]
            if decider is None:
                totals.append(sum(max(0, units) for units in row))
                caps.append(None)
                continue
            self._count_decision("availability", len(loc_ids))
            prepared = self._prepared_policies(channel, sku, self._promo[channel][sku][hour])
            # the stock view of every location, as the store lists it (never below 0)
            total, cap = prepared.totals(
                {loc: max(0, units) for loc, units in zip(loc_ids, row, strict=True)}
            )
            totals.append(total)
            caps.append(cap)
        self.stale_totals[channel] = totals
        self.stale_caps[channel] = caps

    def _sale(self, sale: Sale, hour: int) -> None:
        sku = self.sku_index.get(sale.sku)
        loc = self.loc_index.get(sale.store)
        counts = self.channels.get(sale.channel)
        if sku is None or loc is None or counts is None:
            self.counts.skip(
                "sale",
                "bad_channel" if counts is None else "unknown_location" if loc is None else "unknown_sku",
            )
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
        if lost:
            self.counts.shortfalls.add(False, sale.sku, sale.store, self.locations[loc].region, lost)
        self.lost_window[sku][loc] += lost
        if lost:  # demand the reorder review counts too: the shelf was empty, the customer was not
            key = sku * self.width + loc
            self.refused_window[key] = self.refused_window.get(key, 0) + lost
            self.review_dirty.add(key)
        if take:
            self.stock.sale(sku, loc, take)
            counts.units_allocated += take
            hour_counts.units_allocated += take
            counts.revenue += self.price[sku] * take
            counts.orders_complete += lost == 0
            self.sold_window[sku][loc] += take
            self.sold_all[sku] += take
            self.shipped[sale.id] = [(sku, loc, take)]
