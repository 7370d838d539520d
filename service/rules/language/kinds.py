"""The facts each decision kind supplies to its rulesets, and the result keys a ruleset of that kind may set.

Type names: "int", "float", "str", "bool", "list[str]" for facts; results may also be "dict[str,int]".
The decisions code builds the facts; rulesets declare the subset they read.
"""

from __future__ import annotations

FACT_TYPES = frozenset({"int", "float", "str", "bool", "list[str]"})
RESULT_TYPES = frozenset({"int", "float", "str", "bool", "list[str]", "dict[str,int]"})

FACT_CATALOG: dict[str, dict[str, str]] = {
    "allocation": {
        "order.channel": "str",
        "order.fulfillment": "str",
        "order.region": "str",
        "order.value": "float",
        "order.line_count": "int",
        "order.units": "int",
        "promo.active": "bool",
        "customer.tier": "str",
    },
    "availability": {
        "request.channel": "str",
        "item.category": "str",
        "item.price": "float",
        "location.type": "str",
        "location.region": "str",
        "promo.active": "bool",
    },
    "reorder": {
        "position.sellable": "int",
        "position.in_transit": "int",
        "position.reserved": "int",
        "position.return_pending": "int",
        "position.projected": "int",
        "demand.daily_rate": "float",
        "demand.known": "bool",
        "item.lead_time_days": "int",
        "item.case_pack": "int",
        "item.price": "float",
        "item.cost": "float",
        "item.category": "str",
        "location.type": "str",
        "promo.active": "bool",
        "promo.upcoming": "bool",
    },
    "transfer": {
        "transfer.qty": "int",
        "transfer.value": "float",
        "transfer.reason": "str",
        "source.available": "int",
        "source.available_after": "int",
        "source.floor": "int",
        "source.open_promotions": "int",
        "source.type": "str",
        "source.region": "str",
        "destination.available": "int",
        "destination.open_promotions": "int",
        "destination.type": "str",
        "destination.region": "str",
        "same_region": "bool",
        "requested_by.role": "str",
    },
    "markdown": {
        "markdown.depth": "float",
        "markdown.current_price": "float",
        "markdown.proposed_price": "float",
        "markdown.margin_after": "float",
        "stock.units": "int",
        "stock.value": "float",
        "stock.weeks_of_supply": "float",
        "season.days_to_end": "int",
        "item.category": "str",
        "requested_by.role": "str",
        "promo.active": "bool",
    },
}

RESULT_FIELDS: dict[str, dict[str, str]] = {
    "allocation": {
        "eligible_location_types": "list[str]",
        "floors": "dict[str,int]",
        "ranking": "list[str]",
        "max_splits": "int",
        "max_distance_km": "float",
        "allow_partial": "bool",
        "reservation_ttl_seconds": "int",
        "reason": "str",
    },
    "availability": {
        "eligible": "bool",
        "floor": "int",
        "low_stock_threshold": "int",
        "per_order_cap": "int",
        "reason": "str",
    },
    "reorder": {
        "reorder_point": "float",
        "order_up_to": "float",
        "rounding": "str",
        "max_qty": "int",
        "review": "bool",
        "reason": "str",
    },
    "transfer": {
        "outcome": "str",
        "reason": "str",
        "approvers": "list[str]",
        "sla_hours": "int",
        "escalation": "list[str]",
        "approval": "str",
        "approvals_required": "int",
    },
    "markdown": {
        "outcome": "str",
        "reason": "str",
        "approvers": "list[str]",
        "sla_hours": "int",
        "escalation": "list[str]",
        "approval": "str",
        "approvals_required": "int",
    },
}

# results whose literal values are restricted: key -> the values allowed, or the least whole number allowed
RESULT_CHOICES: dict[str, tuple[str, ...]] = {
    "outcome": ("approve", "route", "reject"),
    "approval": ("any", "all"),
}
RESULT_MINIMUM: dict[str, int] = {"approvals_required": 1, "sla_hours": 0}

KINDS: tuple[str, ...] = tuple(FACT_CATALOG)
