"""Markdown approval: the facts a markdown ruleset reads (depth, margin after the markdown, stock exposure,
weeks of supply, season timing) and the chain of command it routes to.

Pure code. Definitions, as documented in docs/decisions.md:
- depth = 1 - proposed / current (a 30 % markdown is 0.3);
- margin_after = (proposed - cost) / proposed, negative when selling below cost;
- stock.units = sellable units at the locations concerned; stock.value = units x current price (the retail
  value exposed to the markdown);
- weeks_of_supply = units / (daily demand x 7), `NO_DEMAND_WEEKS` when there is no demand;
- season.days_to_end = days from the effective date to the season end (0 once ended), `NO_SEASON_DAYS`
  when the item has no season end.
Applying the outcome is `service.domain.approval.apply_approval` with `MARKDOWN_CHAIN` as the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any

from service.domain.errors import InvalidInput

MARKDOWN_CHAIN = (
    "store_manager",
    "merchandiser",
    "category_manager",
    "merchandising_director",
    "commercial_director",
)
NO_DEMAND_WEEKS = 999.0
NO_SEASON_DAYS = 3650


@dataclass(frozen=True, slots=True)
class MarkdownRequest:
    markdown_id: str
    sku: str
    current_price: float
    proposed_price: float
    effective_from: date
    requested_by_role: str


def markdown_facts(
    request: MarkdownRequest,
    *,
    cost: float,
    category: str,
    units: int,
    daily_rate: float,
    season_end: date | None,
    promo_active: bool,
) -> dict[str, Any]:
    """The nested facts a markdown ruleset reads."""
    current, proposed = request.current_price, request.proposed_price
    if not math.isfinite(current) or current <= 0:
        raise InvalidInput("current_price", "must be a price > 0")
    if not math.isfinite(proposed) or proposed <= 0:
        raise InvalidInput("proposed_price", "must be a price > 0")
    if proposed >= current:
        raise InvalidInput("proposed_price", "must be below current_price for a markdown")
    if cost < 0:
        raise InvalidInput("cost", "must be >= 0")
    units = max(0, units)
    weekly = max(0.0, daily_rate) * 7
    weeks = NO_DEMAND_WEEKS if weekly <= 0 else min(NO_DEMAND_WEEKS, units / weekly)
    days = NO_SEASON_DAYS if season_end is None else max(0, (season_end - request.effective_from).days)
    return {
        "markdown": {
            "depth": round(1 - proposed / current, 4),
            "current_price": current,
            "proposed_price": proposed,
            "margin_after": round((proposed - cost) / proposed, 4),
        },
        "stock": {
            "units": units,
            "value": round(units * current, 2),
            "weeks_of_supply": round(weeks, 2),
        },
        "season": {"days_to_end": days},
        "item": {"category": category},
        "requested_by": {"role": request.requested_by_role},
        "promo": {"active": promo_active},
    }
