"""The locations of tracked stock rows kept in order of their available units, so that a search whose
ranking puts the deepest first finds the covering candidates without screening every location (the
simulator's run keeps its allocator's rows tracked)."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Sequence
from heapq import heappush, heapreplace

from service.domain.allocation.candidates import StaticCandidates


class DepthIndex:
    """Per SKU and location type of tracked stock rows, the locations deepest first."""

    def __init__(self, type_of: Sequence[int], size: int) -> None:
        self._type_of = type_of
        self._size = size  # the pool of a single-location search
        # the stock rows given to `track`, and per SKU and location type the locations of that type as
        # (-available, location), ascending: deepest first; `_seen` holds the units each was filed under
        self.tracked: Sequence[Sequence[int]] | None = None
        self._depth: list[list[list[tuple[int, int]]]] = []
        self._seen: list[list[int]] = []
        self._changed: set[tuple[int, int]] = set()  # (sku, location) changed since they were last filed

    def track(self, available: Sequence[Sequence[int]]) -> Callable[[tuple[int, int]], None]:
        """Keep every SKU's locations of these stock rows in order of available units, so that `plan` on
        these same rows (`Allocator.plan`) finds the deepest candidates without screening every location. The owner of the
        rows must call the function returned after every change of `available[sku][location]`, with the
        pair `(sku, location)` (it only notes the pair: the locations are filed again when next needed);
        `plan` on other rows screens every candidate as before."""
        self.tracked = available
        self._changed = set()
        self._seen = [list(row) for row in available]
        types = max(self._type_of, default=-1) + 1
        self._depth = []
        for row in available:
            by_type: list[list[tuple[int, int]]] = [[] for _ in range(types)]
            for loc, units in enumerate(row):
                by_type[self._type_of[loc]].append((-units, loc))
            self._depth.append([sorted(filed) for filed in by_type])
        return self._changed.add

    def _refile(self) -> None:
        """File the changed (sku, location) pairs of the tracked rows again under their available units."""
        tracked, all_seen, all_depth, type_of = self.tracked, self._seen, self._depth, self._type_of
        assert tracked is not None
        for sku, loc in self._changed:
            units = tracked[sku][loc]
            seen = all_seen[sku]
            before = seen[loc]
            if units != before:
                depth = all_depth[sku][type_of[loc]]
                del depth[bisect_left(depth, (-before, loc))]
                insort(depth, (-units, loc))
                seen[loc] = units
        self._changed.clear()

    def covering(
        self,
        static: StaticCandidates,
        sku: int,
        row: Sequence[int],
        caps: Sequence[int],
        low: Sequence[int] | None,
        qty: int,
    ) -> tuple[list[tuple[int, int]], int] | None:
        """`Allocator._screened` for a tracked row and a `by_rank` ranking, when the deepest candidate covers the
        line (None otherwise: the caller screens every candidate).

        The search pool is then the `size` deepest candidates (size: the single-location pool, or fewer
        when fewer give anything), and the winner the first candidate in static order among those that
        cover the line. That is the first candidate in static order whose giveable units reach both the
        line and the size-th largest giveable, which is found by walking the locations of each candidate
        type deepest first (one floor per type) and stopping once no location further down can give more
        than the size-th largest so far."""
        if self._changed:
            self._refile()
        floor_of = static.floor_of
        capped = static.has_capacity
        size = self._size
        top: list[int] = []  # the largest giveable units so far (at most `size`), smallest first
        # what a location must give to be walked: more than 0, and once `size` are kept more than the least
        kept_least = 0
        walked: list[tuple[int, int]] = []  # (giveable, location) of the candidates walked
        left = 0  # the most the first location left unwalked of any type could give
        depth = self._depth[sku]
        for kind, floor in static.type_floors:
            for negative, loc in depth[kind]:
                giveable = -negative - floor
                if giveable <= kept_least:
                    # nothing of this type from here on gives anything, or more than the size-th
                    if giveable > left:
                        left = giveable
                    break
                if floor_of[loc] < 0 or (low is not None and -negative < low[loc]):
                    continue
                if capped:
                    cap = caps[loc]
                    if cap <= 0:
                        continue
                    if cap < giveable:
                        giveable = cap
                walked.append((giveable, loc))
                if kept_least:  # `size` kept (each gives more than 0)
                    if giveable > kept_least:
                        heapreplace(top, giveable)
                        kept_least = top[0]
                else:
                    heappush(top, giveable)
                    if len(top) == size:
                        kept_least = top[0]
        if not top:
            return [], 0
        if max(top) < qty:
            return None
        least_kept = top[0] if top[0] > qty else qty
        if left < least_kept:
            # no location left unwalked reaches it: the winner is among those walked
            rank_of = static.rank_of
            best = min([rank_of[loc] for giveable, loc in walked if giveable >= least_kept])
            return [(static.locs[best], qty)], len(top)
        for loc, floor in static.pairs:
            units = row[loc]
            giveable = units - floor
            if giveable < least_kept or (low is not None and units < low[loc]):
                continue
            if capped and caps[loc] < least_kept:
                continue
            return [(loc, qty)], len(top)
        raise AssertionError("the deepest candidate covers the line")
