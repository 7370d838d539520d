"""How candidates and combinations are ranked: the order of single locations (`location_key`) and the
score of a filled combination (`score`), both by the policy's ranking criteria, lower is better."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# the criteria whose value depends on stock; the others (distance, priority) are static for a destination
DYNAMIC_CRITERIA = ("fewest_splits", "stock_level")

# a filled location of a combination: (location index, units taken, distance, giveable units)
Filled = tuple[int, int, float, int]


def location_key(
    ranking: Sequence[str], distance: float, priority: int, giveable: int, loc_id: str
) -> tuple[Any, ...]:
    """How good one location is on its own, by the ranking: fewest_splits and stock_level both favour the
    deepest location; the id keeps the order deterministic."""
    parts: list[Any] = []
    for criterion in ranking:
        if criterion == "distance":
            parts.append(distance)
        elif criterion == "priority":
            parts.append(priority)
        else:
            parts.append(-giveable)
    parts.append(loc_id)
    return tuple(parts)


def score(picks: Sequence[Filled], ranking: Sequence[str], priority: Sequence[int]) -> tuple[float, ...]:
    """Score a filled combination, one value per ranking criterion: the number of locations, and
    unit-weighted means of distance, priority and (negated) giveable depth. One location scores its own
    values (exactly: no weighting by units)."""
    if len(picks) == 1:
        loc, _, distance, giveable = picks[0]
        return tuple(
            1.0
            if criterion == "fewest_splits"
            else distance
            if criterion == "distance"
            else float(priority[loc])
            if criterion == "priority"
            else -float(giveable)
            for criterion in ranking
        )
    units = sum(q for _, q, _, _ in picks) or 1
    values: list[float] = []
    for criterion in ranking:
        if criterion == "fewest_splits":
            values.append(float(len(picks)))
        elif criterion == "distance":
            values.append(sum(d * q for _, q, d, _ in picks) / units)
        elif criterion == "priority":
            values.append(sum(priority[loc] * q for loc, q, _, _ in picks) / units)
        else:
            # deeper stock is better: the negated unit-weighted giveable depth sorts it first
            values.append(-sum(g * q for _, q, _, g in picks) / units)
    return tuple(values)
