"""Reorder: whether a sku-location needs replenishing, how much, and whether a planner must review it.

Pure code. The projected position is what the location will have to sell once what is already on its way
arrives: `sellable - reserved + in_transit`. Units awaiting a return disposition (`return_pending`) are not
counted, because some of them will be damaged; they are reported in the breakdown and given to the ruleset,
which may lower its reorder point by a share of them. The ruleset sets the reorder point, the order-up-to
level, the rounding policy, a maximum quantity and the review flag; this module applies them: reorder when
the projected position is at or below the reorder point, for `order_up_to - projected` units rounded by the
explicit policy and never above the maximum.

The demand rate the ruleset reads can be the one the ledger keeps from sale events:
`update_demand_rate` is an exponentially weighted rate for irregular event times.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from service.domain.errors import InvalidInput, PolicyError

ROUNDING_POLICIES = ("up_to_case_pack", "nearest_case_pack", "none")
DEFAULT_HALF_LIFE_DAYS = 7.0


@dataclass(frozen=True, slots=True)
class Position:
    sellable: int
    reserved: int
    in_transit: int
    return_pending: int

    @property
    def projected(self) -> int:
        return self.sellable - self.reserved + self.in_transit

    def to_dict(self) -> dict[str, int]:
        return {
            "sellable": self.sellable,
            "reserved": self.reserved,
            "in_transit": self.in_transit,
            "return_pending": self.return_pending,
            "projected": self.projected,
        }


def promotion_flags(
    windows: Iterable[tuple[datetime, datetime]], now: datetime, lead_time_days: int
) -> tuple[bool, bool]:
    """(a promotion runs now, another starts within the lead time, at least a day ahead) from the
    [start, end) windows of the promotions of the sku at the location: the `promo` facts of a reorder."""
    active = upcoming = False
    horizon = now + timedelta(days=max(1, lead_time_days))
    for start, end in windows:
        if start <= now < end:
            active = True
        elif now < start <= horizon:
            upcoming = True
    return active, upcoming


def reorder_facts(
    position: Position,
    *,
    daily_rate: float,
    demand_known: bool,
    lead_time_days: int,
    case_pack: int,
    price: float,
    cost: float,
    category: str,
    location_type: str,
    promo_active: bool,
    promo_upcoming: bool,
) -> dict[str, Any]:
    """The nested facts a reorder ruleset reads, built the same way for the HTTP decision and the simulator.

    - `position.*`: the sku-location's stock levels (`Position`); `position.projected` is `sellable -
      reserved + in_transit`. `in_transit` is every unit on its way to the location: the ledger's transfers
      in transit (the simulator adds the purchase orders it released and has not yet received).
    - `demand.daily_rate`: units per day. The HTTP decision reads the rate given in the request, else the
      ledger's exponentially weighted rate of the location's sales, else the scan's default, else 0. The
      simulator counts the units sold at the location over its demand window plus the till demand an
      empty shelf refused, and for a DC the units its stores' released reorders asked of it (sent or not),
      per day of the window.
    - `demand.known`: whether there is any demand information for the sku-location at all: a rate given
      or defaulted in the request, a ledger rate (the pair has sold), in the simulator any demand (or DC
      draw) since the run started. A rate of 0 with `known` false is "no demand", not "a slow mover": a
      ruleset that stocks items with no demand (a new range, a presentation minimum) says so by not
      requiring `demand.known`.
    - `item.*`: master data; `location.type`; `promo.active`: a promotion of the SKU runs now;
      `promo.upcoming`: one starts after now and within the lead time (at least one day).
    """
    if case_pack < 1:
        raise InvalidInput("case_pack", "must be a whole number >= 1")
    if daily_rate < 0 or not math.isfinite(daily_rate):
        raise InvalidInput("daily_rate", "must be a finite number >= 0")
    if lead_time_days < 0:
        raise InvalidInput("lead_time_days", "must be >= 0")
    return {
        "position": position.to_dict(),
        "demand": {"daily_rate": float(daily_rate), "known": bool(demand_known)},
        "item": {
            "lead_time_days": lead_time_days,
            "case_pack": case_pack,
            "price": float(price),
            "cost": float(cost),
            "category": category,
        },
        "location": {"type": location_type},
        "promo": {"active": promo_active, "upcoming": promo_upcoming},
    }


@dataclass(frozen=True, slots=True)
class ReorderPolicy:
    reorder_point: float
    order_up_to: float
    rounding: str = "up_to_case_pack"
    max_qty: int | None = None
    review: bool = False
    reason: str | None = None

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> ReorderPolicy:
        def number(key: str) -> float:
            raw = result.get(key)
            if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
                raise PolicyError(key, "expected a finite number")
            return float(raw)

        rop = number("reorder_point")
        out = number("order_up_to")
        if out < rop:
            raise PolicyError("order_up_to", "must be >= reorder_point")
        rounding = result.get("rounding", "up_to_case_pack")
        if rounding not in ROUNDING_POLICIES:
            raise PolicyError("rounding", f"expected one of {', '.join(ROUNDING_POLICIES)}")
        max_qty = result.get("max_qty")
        if max_qty is not None and (isinstance(max_qty, bool) or not isinstance(max_qty, int) or max_qty < 0):
            raise PolicyError("max_qty", "expected a whole number >= 0")
        review = result.get("review", False)
        if not isinstance(review, bool):
            raise PolicyError("review", "expected true or false")
        reason = result.get("reason")
        return cls(rop, out, str(rounding), max_qty, review, None if reason is None else str(reason))


def round_quantity(raw: float, case_pack: int, rounding: str, max_qty: int | None) -> tuple[int, bool]:
    """Round a raw need to an order quantity; returns (quantity, capped by max). Case-pack policies stay
    whole case packs even when capped; `nearest_case_pack` orders at least one case for a positive need."""
    if raw <= 0:
        return 0, False
    if rounding == "none":
        qty = math.ceil(raw)
    elif rounding == "up_to_case_pack":
        qty = math.ceil(raw / case_pack) * case_pack
    elif rounding == "nearest_case_pack":
        # half a case or more rounds up; a positive need below half a case still gets one case
        qty = max(1, math.floor(raw / case_pack + 0.5)) * case_pack
    else:
        raise PolicyError("rounding", f"expected one of {', '.join(ROUNDING_POLICIES)}")
    if max_qty is not None and qty > max_qty:
        qty = max_qty if rounding == "none" else (max_qty // case_pack) * case_pack
        return qty, True
    return qty, False


@dataclass(frozen=True, slots=True)
class ReorderDecision:
    reorder: bool
    qty: int
    review: bool
    raw_qty: float
    capped: bool
    position: Position
    policy: ReorderPolicy
    case_pack: int

    @property
    def release(self) -> str:
        """What happens to the order: none, review (a planner decides) or auto_release."""
        if not self.reorder:
            return "none"
        return "review" if self.review else "auto_release"

    def to_dict(self) -> dict[str, Any]:
        return {
            "reorder": self.reorder,
            "qty": self.qty,
            "release": self.release,
            "review": self.review,
            "reorder_point": self.policy.reorder_point,
            "order_up_to": self.policy.order_up_to,
        }

    def breakdown(self) -> dict[str, Any]:
        return {
            "position": self.position.to_dict(),
            "reorder_point": self.policy.reorder_point,
            "order_up_to": self.policy.order_up_to,
            "raw_qty": round(self.raw_qty, 3),
            "rounding": self.policy.rounding,
            "case_pack": self.case_pack,
            "max_qty": self.policy.max_qty,
            "capped_by_max": self.capped,
        }


def decide_reorder(position: Position, policy: ReorderPolicy, case_pack: int) -> ReorderDecision:
    """Apply the ruleset's reorder policy to a projected position."""
    if case_pack < 1:
        raise InvalidInput("case_pack", "must be a whole number >= 1")
    projected = position.projected
    triggered = projected <= policy.reorder_point
    raw = max(0.0, policy.order_up_to - projected) if triggered else 0.0
    qty, capped = round_quantity(raw, case_pack, policy.rounding, policy.max_qty)
    reorder = triggered and qty > 0
    return ReorderDecision(
        reorder=reorder,
        qty=qty if reorder else 0,
        review=policy.review if reorder else False,
        raw_qty=raw,
        capped=capped,
        position=position,
        policy=policy,
        case_pack=case_pack,
    )


def update_demand_rate(
    rate: float, qty: float, elapsed_days: float, half_life_days: float = DEFAULT_HALF_LIFE_DAYS
) -> float:
    """Exponentially weighted demand rate (units per day) after a sale of `qty` units, `elapsed_days` after
    the previous update. The weight of past demand halves every `half_life_days`. Sales of q units every
    d days converge to exactly q / d; two sales at the same instant add q / tau, where tau is the time
    constant."""
    if elapsed_days < 0:
        raise InvalidInput("elapsed_days", "must be >= 0")
    if half_life_days <= 0:
        raise InvalidInput("half_life_days", "must be > 0")
    tau = half_life_days / math.log(2)
    x = elapsed_days / tau
    keep = math.exp(-x)
    # weight on the new observation q / elapsed, written to stay finite as elapsed -> 0
    per_unit = (-math.expm1(-x) / elapsed_days) if elapsed_days > 0 else 1.0 / tau
    return rate * keep + qty * per_unit


def decay_demand_rate(
    rate: float, elapsed_days: float, half_life_days: float = DEFAULT_HALF_LIFE_DAYS
) -> float:
    """The rate read `elapsed_days` after its last update with no sale since."""
    return update_demand_rate(rate, 0.0, elapsed_days, half_life_days)
