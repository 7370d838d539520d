"""Why each location was or was not chosen, for an allocation logged without the full trace.

The default trace (`rules`) answers fast and leaves the candidate table out; the decision log keeps what
the plan read beyond its request and facts (`allocation.planned_on`: the stock view, the low-stock
thresholds, the capacity already used, a fingerprint of the locations). Here the same pure allocator runs
again, with its trace on, on those recorded inputs and the policy the trace recorded, and says what it
could not reproduce: the locations are today's master data (the fingerprint says whether they changed),
and a decision asked for with `trace=none`, or logged before inputs were recorded, cannot be recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from service.decisions.allocation import candidates_view, destination_of
from service.decisions.common import candidate_locations, locations_fingerprint
from service.decisions.schemas import AllocationRequest
from service.domain.allocation import AllocationPolicy, Fulfillment, OrderLine, allocate, plan_to_dict
from service.domain.errors import InvalidInput, PolicyError
from service.masterdata import MasterData

NOT_TRACED = (
    "this decision was asked for with trace=none, so neither its policy nor the stock it saw was recorded"
)
NOT_RECORDED = "this decision was logged before decisions recorded the stock they planned on"
LOCATIONS_CHANGED = (
    "the locations (master data) changed since this decision: the table uses today's locations, so a "
    "distance, type or capacity may differ from what the decision saw"
)
PLAN_DIFFERS = (
    "recomputed on the recorded inputs, the allocator now picks other locations than the decision did "
    "(the locations changed since), so the table may not explain the decision"
)


@dataclass(frozen=True)
class Recomputed:
    """The candidate table recomputed for a logged allocation (`candidates` in the full trace's shape), or
    empty with `missing` saying why it could not be; `notes` say where it may differ from the decision."""

    candidates: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing: str | None = None


def recompute_candidates(logged: dict[str, Any], md: MasterData) -> Recomputed:
    """Run the allocator again, with its trace, on what the logged allocation `logged` (as
    `GET /v1/decisions/{id}` answers it) recorded, over the locations of `md`."""
    trace = logged.get("trace")
    if not isinstance(trace, dict) or not isinstance(trace.get("policy"), dict):
        return Recomputed(missing=NOT_TRACED)
    inputs = logged.get("inputs")
    if not isinstance(inputs, dict) or not isinstance(inputs.get("stock"), dict):
        return Recomputed(missing=NOT_RECORDED)
    try:
        request = msgspec.convert(logged["request"], AllocationRequest)
        plan = allocate(
            [OrderLine(line.sku, line.qty) for line in request.lines],
            candidate_locations(md),
            inputs["stock"],
            AllocationPolicy.from_result(trace["policy"]),
            Fulfillment(request.fulfillment, request.pickup_location),
            destination_of(md, request),
            low_stock_thresholds=inputs.get("low_stock") or None,
            capacity_used=inputs.get("capacity_used") or None,
            explain=True,
        )
    except (msgspec.ValidationError, InvalidInput, PolicyError) as exc:
        # a SKU or store master data no longer knows, or a record this code cannot read
        return Recomputed(missing=f"the decision cannot be planned again today: {exc}")
    notes = []
    if inputs.get("locations") != locations_fingerprint(md):
        notes.append(LOCATIONS_CHANGED)
    if _picks(plan_to_dict(plan, with_candidates=False)["lines"]) != _picks(logged["decision"]["lines"]):
        notes.append(PLAN_DIFFERS)
    return Recomputed(candidates_view(plan), notes)


def _picks(lines: list[dict[str, Any]]) -> list[tuple[str, list[tuple[str, int]]]]:
    return [
        (line["sku"], [(pick["location"], pick["qty"]) for pick in line["allocations"]]) for line in lines
    ]
