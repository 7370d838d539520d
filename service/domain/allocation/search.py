"""The search for the best combination of locations for one line (see the package's docstring): which
combination sizes are searched, which candidates make the bounded pool, and the best filled combination
of the pool by `ranking.score`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from operator import itemgetter
from typing import Any

from service.domain.allocation.model import MAX_COMBINATIONS, MAX_SEARCH_SPLITS, AllocationPolicy
from service.domain.allocation.ranking import Filled, score

# an eligible candidate: (its ranking key, location index, distance, giveable units); any key that sorts
# candidates in the order of `ranking.location_key` will do
Candidate = tuple[Any, int, float, int]
Picks = list[tuple[int, int]]  # (location index, units)

_first = itemgetter(0)


def _depth_order(c: Candidate) -> tuple[int, Any]:
    return -c[3], c[0]


def search_sizes(
    depths: Sequence[int], qty: int, policy: AllocationPolicy, ranking: Sequence[str]
) -> list[int]:
    """The combination sizes searched, given the giveable units deepest first: when fewest splits decide
    first, only the smallest size that covers the line (or the largest allowed)."""
    max_k = min(policy.max_splits, len(depths), MAX_SEARCH_SPLITS)
    if ranking[0] != "fewest_splits":
        return list(range(1, max_k + 1))
    running = 0
    for k in range(1, max_k + 1):
        running += depths[k - 1]
        if running >= qty:
            return [k]
    return [max_k]


def pool_extra(must: int, others: int, sizes: Sequence[int], pool_size: int) -> int:
    """How many of the best-ranked other candidates join the `must` deepest in the pool: up to
    `pool_size`, fewer while the number of combinations would pass `MAX_COMBINATIONS`."""
    extra = max(0, min(pool_size, others))
    if sizes == [1]:  # one combination per location
        return min(extra, max(0, MAX_COMBINATIONS - must))
    while extra > 0 and sum(math.comb(must + extra, k) for k in sizes) > MAX_COMBINATIONS:
        extra -= 1
    return extra


def choose(
    eligible: list[Candidate],
    qty: int,
    policy: AllocationPolicy,
    ranking: Sequence[str],
    priority: Sequence[int],
    ids: Sequence[str],
    pool_size: int,
    *,
    in_depth_order: bool = False,
) -> tuple[Picks, int, list[Candidate]]:
    """The best filled combination for a line of `qty` units: (picks, combinations searched, the pool).
    `eligible` is sorted into key order here, unless `in_depth_order` says it already is in key order and
    that order is also depth order (deepest first), as it is when every stock-dependent criterion is ranked
    before every static one. The deepest candidates are always in the pool, so a coverage that exists is
    never missed."""
    if in_depth_order:
        deepest = eligible
    else:
        eligible.sort(key=_first)
        deepest = sorted(eligible, key=_depth_order)
    sizes = search_sizes([c[3] for c in deepest[:MAX_SEARCH_SPLITS]], qty, policy, ranking)
    m = max(sizes)
    if in_depth_order:
        pool = eligible[: m + pool_extra(m, len(eligible) - m, sizes, pool_size)]
    else:
        must = deepest[:m]
        must_ids = {c[1] for c in must}
        others = [c for c in eligible if c[1] not in must_ids]
        pool = sorted(must + others[: pool_extra(m, len(others), sizes, pool_size)], key=_first)
    searched = sum(math.comb(len(pool), k) for k in sizes)
    return search_pool(pool, sizes, qty, ranking, priority, ids), searched, pool


def search_pool(
    pool: Sequence[Candidate],
    sizes: Sequence[int],
    qty: int,
    ranking: Sequence[str],
    priority: Sequence[int],
    ids: Sequence[str],
) -> Picks:
    """Fill every combination of the pool of each size, its locations in pool order, and keep the one
    that allocates most, then scores best, then has the smallest location ids."""
    best: tuple[Any, ...] | None = None
    best_picks: Picks = []
    for k in sizes:
        for combo in combinations(pool, k):
            picks: list[Filled] = []
            remaining = qty
            for _, loc, distance, giveable in combo:
                if remaining <= 0:
                    break
                take = giveable if giveable < remaining else remaining
                if take > 0:
                    picks.append((loc, take, distance, giveable))
                    remaining -= take
            key = (-(qty - remaining), *score(picks, ranking, priority), tuple(ids[p[0]] for p in picks))
            if best is None or key < best:
                best = key
                best_picks = [(loc, q) for loc, q, _, _ in picks]
    return best_picks
