"""Store transfer approval: the facts a transfer ruleset reads, and the chain of command it routes to.

Pure code. The source's stock after the transfer is compared with the floor it must keep; the transfer is
valued at unit cost (what the business moves), falling back to price when cost is unknown. Applying the
ruleset's outcome is `service.domain.approval.apply_approval`, with `TRANSFER_CHAIN` as the default chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.domain.errors import InvalidInput

# the pseudo-channel whose availability floor is what a source keeps for its own shoppers when asked to
# send stock away
TRANSFER_CHANNEL = "transfer"

TRANSFER_CHAIN = (
    "store_associate",
    "store_manager",
    "district_manager",
    "regional_manager",
    "operations_director",
)


@dataclass(frozen=True, slots=True)
class TransferSide:
    location: str
    type: str
    region: str
    available: int
    open_promotions: int


@dataclass(frozen=True, slots=True)
class TransferRequest:
    transfer_id: str
    sku: str
    qty: int
    reason: str
    requested_by_role: str


def unit_value(cost: float, price: float) -> float:
    """What one unit of a transfer is worth: its cost, or its price when the cost is unknown (0)."""
    return cost if cost > 0 else price


def transfer_facts(
    request: TransferRequest,
    source: TransferSide,
    destination: TransferSide,
    *,
    source_floor: int,
    unit_value: float,
) -> dict[str, Any]:
    """The nested facts a transfer ruleset reads."""
    if request.qty < 1:
        raise InvalidInput("qty", "must be a whole number >= 1")
    if source.location == destination.location:
        raise InvalidInput("to_location", "must differ from from_location")
    if unit_value < 0:
        raise InvalidInput("unit_value", "must be >= 0")
    return {
        "transfer": {
            "qty": request.qty,
            "value": round(request.qty * unit_value, 2),
            "reason": request.reason,
        },
        "source": {
            "available": source.available,
            "available_after": source.available - request.qty,
            "floor": source_floor,
            "open_promotions": source.open_promotions,
            "type": source.type,
            "region": source.region,
        },
        "destination": {
            "available": destination.available,
            "open_promotions": destination.open_promotions,
            "type": destination.type,
            "region": destination.region,
        },
        "same_region": source.region == destination.region,
        "requested_by": {"role": request.requested_by_role},
    }
