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
from simulators.state import APPROVED, ARRIVE, PO_ARRIVE, RunState


class Replenishment(RunState):
    def _review(self, at: int) -> None:
        decider = self.policies.get("reorder")
        if decider is None:
            return
        replen = self.world.scenario.replenishment
        window_days = max(replen.demand_window_hours, 1.0) / 24.0
        stock = self.stock
        store_lead_days = max(0, math.ceil(replen.store_lead_time_hours / 24))
        convert = ReorderPolicy.from_result
        now = self.world.start + timedelta(seconds=at)
        promotions = self.world.scenario.promotions
        for sku, info in enumerate(self.world.skus):
            # the scenario's promotions of the SKU are its promotion calendar, at every location
            windows = [
                (p.start, p.end) for p in promotions if info.id in p.skus or info.category in p.categories
            ]
            sellable, reserved = stock.sellable[sku], stock.reserved[sku]
            in_transit, return_pending = stock.in_transit[sku], stock.return_pending[sku]
            sold = self.sold_window[sku]
            on_order = self.on_order_at[sku]
            for loc, location in enumerate(self.locations):
                lead_days = info.lead_time_days if location.type == "dc" else store_lead_days
                # inbound: transfers on their way (the ledger's in_transit) and purchase orders not yet arrived
                inbound = in_transit[loc] + on_order[loc]
                position = Position(sellable[loc], reserved[loc], inbound, return_pending[loc])
                promo, upcoming = promotion_flags(windows, now, lead_days)
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
                if self.decided is not None:
                    gathered = {"at": now, "sku": info.id, "location": location.id, "facts": facts}
                    self.decided("reorder", gathered, decision)
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
            self._schedule(at + self.world.skus[sku].lead_time_days * 86400, PO_ARRIVE, (sku, loc, qty))
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
        self._schedule(at + int(hours * 3600), ARRIVE, (sku, loc, qty))

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
