"""Reorder reviews, store transfers and markdown reviews of a run.

Each decision is the use case's: the facts by the use case's builder (`reorder_facts`, `transfer_facts`,
`markdown_facts`), the policy from the run's ruleset, the decision by the same core (`decide_reorder`;
`decide_approval` for transfers and markdowns). The run supplies what the service would read (positions
from its stock view, sales rates from its own counts, the hour's promotions) and acts on the outcome in its
own world: purchase orders and transfers arrive after their lead times, approvers answer after sampled
response times.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import msgspec

from service.decisions.core import (
    MARKDOWN_CHAIN,
    TRANSFER_CHAIN,
    TRANSFER_CHANNEL,
    decide_approval,
    decide_reorder,
    markdown_facts,
    promotion_flags,
    reorder_facts,
    transfer_facts,
    unit_value,
)
from service.domain.approval import ApprovalDecision, Requester
from service.domain.cases import chain_above, escalate
from service.domain.errors import PolicyError
from service.domain.markdown import MarkdownRequest
from service.domain.reorder import Position, ReorderPolicy
from service.domain.transfer import TransferRequest, TransferSide
from simulators.fairshare import StoreNeed, fair_shares
from simulators.policy import Decider
from simulators.state import APPROVED, ARRIVE, PO_ARRIVE, RunState

_NO_PROMO = (False, False, False)
# reorder decisions a run keeps by their inputs before it starts over (bounds the memory at real sizes)
_DECISIONS_KEPT = 200_000


def _position(facts: Mapping[str, Any]) -> Position:
    p = facts["position"]
    return Position(p["sellable"], p["reserved"], p["in_transit"], p["return_pending"])


class _StoreOrder(msgspec.Struct, frozen=True):
    """A store's released reorder, for its DC to fill after the review."""

    sku: int
    loc: int
    source: int
    qty: int
    need: StoreNeed


class Replenishment(RunState):
    def _promo_flags(self, at: int) -> dict[int, tuple[bool, bool, bool]]:
        """Per promoted SKU: (a promotion runs now, one starts within a DC's lead time, within a store's),
        by the reorder decision's own `promotion_flags`."""
        now = self.world.start + timedelta(seconds=at)
        flags: dict[int, tuple[bool, bool, bool]] = {}
        for sku, windows in self.promo_windows.items():
            active, upcoming_dc = promotion_flags(windows, now, self.world.skus[sku].lead_time_days)
            upcoming_store = promotion_flags(windows, now, self.store_lead_days)[1]
            flags[sku] = (active, upcoming_dc, upcoming_store)
        return flags

    def _review(self, at: int) -> None:
        """Decide the reorders of the sku-locations whose inputs changed since the last review.

        A sku-location none of whose inputs changed (position, demand over the window, promotion flags; the
        ruleset and the master data are fixed for a run) gets the decision it got last time, which raised
        nothing (those that raised one are reviewed again), so leaving it out changes no outcome: the review
        costs what changed, not SKUs x locations. `full_review` decides every sku-location instead; both
        give the same decisions, in the same order (SKU, then location, as the world lists them)."""
        decider = self.policies.get("reorder")
        if decider is None:
            return
        width = self.width
        total = len(self.sku_ids) * width
        flags = self._promo_flags(at)
        again = self.review_again
        dirty = self.review_dirty
        self.review_again = set()
        orders: list[_StoreOrder] = []
        self._count_decision("reorder", total)
        # the DCs' own demand rates are those of this review (a DC left out had none)
        self.dc_own_rate = {}
        if self.full_review or not self.reviewed:
            dirty.clear()
            for key in range(total):
                self._review_one(key, at, decider, flags, orders)
        else:
            todo = dirty | again
            dirty.clear()
            for sku, now in flags.items():
                if self.review_flags.get(sku, _NO_PROMO) != now:
                    todo.update(range(sku * width, (sku + 1) * width))
            for key in sorted(todo):
                self._review_one(key, at, decider, flags, orders)
        self.review_flags = flags
        self.reviewed = True
        # the stores' released reorders are filled once every sku-location is decided, so that no decision
        # of the review sees another's move; what the stores asked of their DC counts in its demand over
        # the next window, whether the DC could send it or not
        drawn = self.drawn_window
        for order in orders:
            key = order.sku * width + order.source
            drawn[key] = drawn.get(key, 0) + order.qty
            dirty.add(key)
        self._fill_store_orders(orders, at)

    def _review_one(
        self,
        key: int,
        at: int,
        decider: Decider,
        flags: dict[int, tuple[bool, bool, bool]],
        orders: list[_StoreOrder],
    ) -> None:
        """Decide one sku-location's reorder and act on it: a DC's is a purchase order, a store's joins
        `orders`, which its DC fills after the review."""
        sku, loc = divmod(key, self.width)
        location = self.locations[loc]
        stock = self.stock
        dc = location.type == "dc"
        # the demand over the window: units sold there, till demand its empty shelf refused, and for a DC
        # the units its stores' released reorders asked of it
        own = self.sold_window[sku][loc]
        if own:
            self.sold_window[sku][loc] = 0
        own += self.refused_window.pop(key, 0)
        units = own + self.drawn_window.pop(key, 0)
        known = self.demand_known
        if units:
            known.add(key)
        units = self._over_window(self.window_history, key, units)
        if dc:
            # what the DC's own channels sell, which it keeps its share for when its stores' orders
            # exceed its stock (see `simulators.fairshare`)
            own = self._over_window(self.own_history, key, own)
            if own:
                self.dc_own_rate[key] = own / self.window_days
        if units:
            self.review_again.add(key)
        active, upcoming_dc, upcoming_store = flags.get(sku, _NO_PROMO)
        # everything the facts are built from: the decision is a function of these values
        inputs = (
            sku,
            location.type,
            stock.sellable[sku][loc],
            stock.reserved[sku][loc],
            # inbound: transfers on their way (the ledger's in_transit) and purchase orders not yet arrived
            stock.in_transit[sku][loc] + self.on_order_at[sku][loc],
            stock.return_pending[sku][loc],
            round(units / self.window_days, 2),
            key in known,
            active,
            upcoming_dc if dc else upcoming_store,
        )
        decisions = self.reorder_decisions
        decision = None if decisions is None else decisions.get(inputs)
        if decision is None:
            facts = self._reorder_facts(inputs)
            policy = decider.decide_as(facts, ReorderPolicy.from_result)
            decision = decide_reorder(_position(facts), policy, self.world.skus[sku].case_pack)
            if decisions is not None:
                if len(decisions) >= _DECISIONS_KEPT:
                    decisions.clear()
                decisions[inputs] = decision
        else:  # the ruleset's own memo would answer from the same values: count it as it would
            decider.memo_hits += 1
        if self.decided is not None:
            when = self.world.start + timedelta(seconds=at)
            gathered = {"sku": self.sku_ids[sku], "location": location.id, "at": when,
                        "facts": self._reorder_facts(inputs)}  # fmt: skip
            self.decided("reorder", gathered, decision)
        if not decision.reorder:
            return
        self.review_again.add(key)
        counts = self.counts
        counts.reorders_raised += 1
        if decision.review:
            counts.reorders_for_review += 1
            return
        self._release_reorder(sku, loc, decision.qty, at, inputs, orders)

    def _over_window(self, history: dict[int, list[int]], key: int, now: int) -> int:
        """`now` (this interval's units) plus those of the window's earlier intervals, kept in `history` per
        key (and reviewed again) while any of them is not 0."""
        if self.window_reviews <= 1:
            return now
        earlier = history.pop(key, None)
        units = now
        if earlier is not None:
            units += sum(earlier)
            shifted = [now, *earlier[:-1]] if len(earlier) == self.window_reviews - 1 else [now, *earlier]
        else:
            shifted = [now]
        if any(shifted):
            history[key] = shifted
        return units

    def _reorder_facts(self, inputs: tuple[Any, ...]) -> dict[str, Any]:
        """The reorder facts of a sku-location, by the decision's own builder, from what the review read."""
        sku, location_type, sellable, reserved, inbound, return_pending, rate, known, active, upcoming = (
            inputs
        )
        info = self.world.skus[sku]
        return reorder_facts(
            Position(sellable, reserved, inbound, return_pending),
            daily_rate=rate,
            demand_known=known,
            lead_time_days=info.lead_time_days if location_type == "dc" else self.store_lead_days,
            case_pack=info.case_pack,
            price=info.price,
            cost=info.cost,
            category=info.category,
            location_type=location_type,
            promo_active=active,
            promo_upcoming=upcoming,
        )

    def _release_reorder(
        self, sku: int, loc: int, qty: int, at: int, inputs: tuple[Any, ...], orders: list[_StoreOrder]
    ) -> None:
        """A DC's reorder is a purchase order; a store's joins `orders`, for its region's DC to fill."""
        counts = self.counts
        location = self.locations[loc]
        if location.type == "dc":
            # a purchase order: the units exist nowhere in the network until they arrive
            self.on_order_at[sku][loc] += qty
            self.review_dirty.add(sku * self.width + loc)
            counts.reorders_released += 1
            counts.reorder_units += qty
            counts.reorder_units_ordered += qty
            self._schedule(at + self.world.skus[sku].lead_time_days * 86400, PO_ARRIVE, (sku, loc, qty))
            return
        source = self.region_dc.get(location.region)
        if source is None:
            counts.reorder_units_short += qty
            counts.reorders_unfilled += 1
            return
        # the store's own demand rate and projected position (sellable - reserved + inbound), for the share
        _, _, sellable, reserved, inbound, _, rate, *_ = inputs
        orders.append(_StoreOrder(sku, loc, source, qty, StoreNeed(rate, sellable - reserved + inbound, qty)))

    def _fill_store_orders(self, orders: list[_StoreOrder], at: int) -> None:
        """Each DC fills its stores' orders of a SKU from what it holds above the floor the availability
        ruleset keeps back from transfers: every order when they all fit, else the fair shares of
        `simulators.fairshare` against the DC's own channels. A store's units arrive after the store lead
        time; what a DC could not send is short."""
        by_source: dict[tuple[int, int], list[_StoreOrder]] = {}
        for order in orders:
            by_source.setdefault((order.sku, order.source), []).append(order)
        counts = self.counts
        hours = self.world.scenario.replenishment.store_lead_time_hours
        hour = min(at // 3600, self.hours_total)
        has_floors = self.policies.get("availability") is not None
        for (sku, source), group in by_source.items():
            floor = 0
            if has_floors:
                dc = self.locations[source]
                floor = self._location_policy(TRANSFER_CHANNEL, sku, dc, self._promo_any[sku][hour]).floor
            spare = self.available[sku][source] - floor
            own_rate = self.dc_own_rate.get(sku * self.width + source, 0.0)
            shares = fair_shares(spare, own_rate, [order.need for order in group])
            for order, moved in zip(group, shares, strict=True):
                counts.reorder_units_short += order.qty - moved
                if moved <= 0:
                    counts.reorders_unfilled += 1
                    continue
                counts.reorders_released += 1
                counts.reorder_units += moved
                counts.reorder_units_moved += moved
                self.replenishing += moved
                self.stock.transfer_out(sku, source, order.loc, moved)
                self._schedule(at + int(hours * 3600), ARRIVE, (sku, order.loc, moved, True))

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
                    # what the source keeps for its own shoppers, as the transfer use case reads it
                    source_floor=self._location_policy(TRANSFER_CHANNEL, sku, src, promos > 0).floor,
                    unit_value=unit_value(self.cost[sku], self.price[sku]),
                )
                self._count_decision("transfer")
                try:
                    # converted once per distinct answer of the ruleset, like its policy objects
                    decision: ApprovalDecision | None = decider.decide_as(facts, self._transfer_decision)
                except PolicyError:
                    decision = None
                if self.decided is not None:
                    gathered = {"request": request, "from": src.id, "to": dst.id, "facts": facts}
                    self.decided("transfer", gathered, decision)
                outcome = "route" if decision is None else decision.outcome
                if outcome == "approve" and row[source] >= qty:
                    self.counts.transfers_approved += 1
                    self.counts.transfers_executed += 1
                    self.stock.transfer_out(sku, source, dest, qty)
                    self._schedule(at + int(spec.transit_hours * 3600), ARRIVE, (sku, dest, qty))
                elif outcome == "reject" or outcome == "approve":
                    self.counts.transfers_rejected += 1
                else:
                    self.counts.transfers_routed += 1
                    if self.world.scenario.approvals.enabled:
                        self._route_transfer(at, decision, (sku, source, dest, qty))
            for dest in range(len(lost_row)):
                lost_row[dest] = 0

    def _transfer_decision(self, result: Mapping[str, Any]) -> ApprovalDecision:
        """The transfer decision of a ruleset answer, for a request by the scenario's requester role."""
        requester = Requester("simulated", self.world.scenario.transfers.requested_by)
        return decide_approval(result, requester, TRANSFER_CHAIN)

    def _markdown_decision(self, result: Mapping[str, Any]) -> ApprovalDecision:
        """The markdown decision of a ruleset answer, for a request by the scenario's requester role."""
        requester = Requester("simulated", self.world.scenario.markdowns.requested_by)
        return decide_approval(result, requester, MARKDOWN_CHAIN)

    def _route_transfer(
        self, at: int, decision: ApprovalDecision | None, move: tuple[int, int, int, int]
    ) -> None:
        """Run a routed transfer through its approval case: approvers answer after their sampled response
        times, a level past its SLA escalates, past the chain's end the request expires."""
        if decision is None:
            self.counts.transfers_expired += 1
            return
        hours = self._approval_hours(decision, self.world.scenario.transfers.requested_by)
        if hours is None:
            self.counts.transfers_expired += 1
            return
        self._schedule(at + int(hours * 3600), APPROVED, (*move, hours))

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
        self._schedule(at + int(self.world.scenario.transfers.transit_hours * 3600), ARRIVE, (sku, dest, qty))

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
            try:
                decision: ApprovalDecision | None = decider.decide_as(facts, self._markdown_decision)
            except PolicyError:
                decision = None
            if self.decided is not None:
                gathered = {
                    "request": request,
                    "units": units,
                    "daily_rate": daily,
                    "season_end": season_end,
                    "facts": facts,
                }
                self.decided("markdown", gathered, decision)
            outcome = "route" if decision is None else decision.outcome
            if outcome == "approve":
                self.counts.markdowns_approved += 1
            elif outcome == "reject":
                self.counts.markdowns_rejected += 1
            else:
                self.counts.markdowns_routed += 1
