"""The gather-decide-act split of the five decisions: for each, the one facts builder and the one pure core
that the HTTP use cases (`service.decisions.*`) and the simulator (`simulators/`) both call.

Everything here is synchronous and does no I/O. A use case gathers (master data, stock, demand), builds the
facts here, evaluates the ruleset into a policy, runs the core on its stock view, then acts (reserves,
opens a case, logs). The simulator does the same with its own stock view (the run's `MemoryStockStore`
core), clock and sink; only where the stock view comes from and where the decision goes differ.

| kind | facts builder | pure core |
| --- | --- | --- |
| allocation | `OrderFacts` (`.nested()`) | `Allocator.plan` (`service.domain.allocation`; `allocate` is its keyed form), then `held_lines` |
| availability | `availability_facts` | `PreparedPolicies.totals` (`service.domain.availability`) |
| reorder | `reorder_facts` (its `promo` from `promotion_flags`) | `decide_reorder` (all `service.domain.reorder`) |
| transfer | `transfer_facts` (`service.domain.transfer`; the source floor is the availability policy of `TRANSFER_CHANNEL` there, the value `unit_value`) | `decide_approval` with `TRANSFER_CHAIN` |
| markdown | `markdown_facts` (`service.domain.markdown`) | `decide_approval` with `MARKDOWN_CHAIN` |
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from operator import itemgetter
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from service.domain.allocation import Allocator
from service.domain.approval import ApprovalDecision, Requester, apply_approval
from service.domain.availability import PreparedPolicies
from service.domain.markdown import MARKDOWN_CHAIN, markdown_facts
from service.domain.reorder import decide_reorder, promotion_flags, reorder_facts
from service.domain.transfer import TRANSFER_CHAIN, TRANSFER_CHANNEL, transfer_facts, unit_value

__all__ = [
    "MARKDOWN_CHAIN",
    "ORDER_FACT_POSITIONS",
    "TRANSFER_CHAIN",
    "TRANSFER_CHANNEL",
    "Allocator",
    "OrderFacts",
    "PreparedPolicies",
    "availability_facts",
    "decide_approval",
    "decide_reorder",
    "held_lines",
    "markdown_facts",
    "order_fact_key",
    "promotion_flags",
    "reorder_facts",
    "transfer_facts",
    "unit_value",
]

K = TypeVar("K", bound=Hashable)
L = TypeVar("L", bound=Hashable)


# -------------------------------------------------------------------------------------------------------------
# allocation


class OrderFacts(NamedTuple):
    """The facts of an allocation decision, flat: what the allocation ruleset reads of an order. `value` is
    the order's value unrounded (`nested` rounds it to cents)."""

    channel: str
    fulfillment: str
    region: str
    value: float
    line_count: int
    units: int
    promo: bool
    tier: str

    def nested(self) -> dict[str, Any]:
        """The facts as the allocation ruleset reads them."""
        # one unpacking instead of eight attribute reads: a simulation builds these for every order
        channel, fulfillment, region, value, line_count, units, promo, tier = self
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


# fact path -> its position in `OrderFacts` (a read-only view)
ORDER_FACT_POSITIONS: Mapping[tuple[str, ...], int] = MappingProxyType(
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


def _no_key(facts: OrderFacts) -> tuple[()]:
    return ()


def order_fact_key(paths: Iterable[tuple[str, ...]]) -> Callable[[OrderFacts], Hashable] | None:
    """A function picking the values of the fact paths a ruleset declares straight from `OrderFacts`, so
    two orders alike in them share one policy; None when a path is not an order fact or is the order value
    (kept unrounded in the flat facts, so a ruleset reading it is keyed on the nested facts instead)."""
    positions = [ORDER_FACT_POSITIONS.get(tuple(path)) for path in paths]
    if None in positions or ORDER_FACT_POSITIONS[("order", "value")] in positions:
        return None
    if not positions:
        return _no_key
    picked: Callable[[OrderFacts], Hashable] = itemgetter(*[p for p in positions if p is not None])
    return picked


def held_lines(
    lines: Sequence[tuple[K, int]], picks: Sequence[Sequence[tuple[L, int]]]
) -> list[tuple[K, L, int]]:
    """What an allocation reserves: for the order's lines (sku, qty) and their picks (location, qty), the
    units per (sku, location) summed, in the order they are first picked."""
    if len(picks) == 1:  # one line: its picks are at distinct locations already
        sku = lines[0][0]
        return [(sku, location, qty) for location, qty in picks[0]]
    merged: dict[tuple[K, L], int] = {}
    for (sku, _), line_picks in zip(lines, picks, strict=True):
        for location, qty in line_picks:
            key = (sku, location)
            merged[key] = merged.get(key, 0) + qty
    return [(sku, location, qty) for (sku, location), qty in merged.items()]


# -------------------------------------------------------------------------------------------------------------
# availability


def availability_facts(
    channel: str, category: str, price: float, location_type: str, region: str, promo: bool
) -> dict[str, Any]:
    """The facts the availability ruleset reads for one item at one location for one channel."""
    return {
        "request": {"channel": channel},
        "item": {"category": category, "price": float(price)},
        "location": {"type": location_type, "region": region},
        "promo": {"active": promo},
    }


# -------------------------------------------------------------------------------------------------------------
# transfer, markdown


def decide_approval(
    result: Mapping[str, Any], requester: Requester, chain: Sequence[str]
) -> ApprovalDecision:
    """The transfer or markdown decision from its ruleset's result: the outcome, routed so the requester
    never approves their own request (`chain`: `TRANSFER_CHAIN` or `MARKDOWN_CHAIN`)."""
    return apply_approval(result, requester, chain)
