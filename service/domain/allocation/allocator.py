"""The allocator: the one implementation of the choice `allocate` makes, over integer indexes. The service
keeps one per master data snapshot, the simulator one per run; both plan every order through `plan`, with
the trace collector of the decision (`NO_TRACE` keeps nothing; `trace.CandidateRecorder` keeps the full
trace, which changes nothing in the choice).

A line is screened into its eligible candidates and searched by `search.choose`. Where the ranking puts
every stock-dependent criterion first (`StaticCandidates.fast`), the screening makes integer sort keys and
two shortcuts of the search apply when the deepest candidate covers the line (the winner is then known
without filling combinations); on tracked rows (the simulator's) `DepthIndex.covering` finds that winner
without screening every candidate. A recording collector sees every shortcut's pool too, except the walk
over tracked rows, which it does not take (the screening gives the same choice).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from service.domain.allocation.candidates import (
    CACHE_LIMIT,
    UNLIMITED,
    Network,
    StaticCandidates,
    screen_static,
)
from service.domain.allocation.depth import DepthIndex
from service.domain.allocation.model import MAX_COMBINATIONS, SEARCH_POOL_SIZE, AllocationPolicy, Location
from service.domain.allocation.ranking import location_key
from service.domain.allocation.search import Candidate, Picks, choose
from service.domain.allocation.trace import NO_TRACE, NoTrace

IndexedPicks = list[Picks]  # per line: (location index, qty)
# candidates from which a tracked row is walked deepest first (`DepthIndex.covering`) instead of screened
DEPTH_WALK_FROM = 24
_Where = tuple[float, float, str, int]  # (lat, lon, fulfillment, pickup)


class Allocator:
    """`allocate`'s choice over integer indexes: stock as `available[sku][location]`, capacity as
    `capacity[location]` (`UNLIMITED`: no daily limit), and per (policy, fulfillment, pickup, destination)
    the stock-independent screening and order of the candidates computed once and kept."""

    def __init__(
        self, network: Network, capped: Sequence[int] | None = None, pool_size: int = SEARCH_POOL_SIZE
    ) -> None:
        """`capped`: the indexes of the locations that may have a daily capacity (None: any may)."""
        self.network = network
        self.capped = set(range(len(network.ids)) if capped is None else capped)
        self.pool_size = pool_size
        # pool size of a single-location search: the deepest location plus up to pool_size others
        self._single_pool = 1 + max(0, min(pool_size, MAX_COMBINATIONS - 1))
        # what the static screening depends on in a policy -> (lat, lon, fulfillment, pickup) -> candidates
        self._static: dict[tuple[Any, ...], dict[_Where, StaticCandidates]] = {}
        # policy -> the candidates of its signature (equal policies are one key)
        self._signatures: dict[AllocationPolicy, dict[_Where, StaticCandidates]] = {}
        self._kept = 0  # candidate lists held over all signatures
        # (policy, lat, lon, fulfillment, pickup) -> its candidates: one look-up for an order like one before
        self._recent: dict[tuple[AllocationPolicy, float, float, str, int], StaticCandidates] = {}
        # a candidate's sort key is giveable << _rank_bits | (_rank_mask - its rank in static order)
        self._rank_bits = max(1, len(network.ids).bit_length())
        self._rank_mask = (1 << self._rank_bits) - 1
        types = sorted(set(network.types))
        self._type_of = [types.index(t) for t in network.types]
        self._depth = DepthIndex(self._type_of, self._single_pool)
        # every location's daily capacity (`UNLIMITED`: none), as the locations give it
        self.capacity = [
            UNLIMITED if loc.capacity_remaining is None else loc.capacity_remaining
            for loc in network.locations
        ]

    @classmethod
    def over(cls, locations: Sequence[Location], pool_size: int = SEARCH_POOL_SIZE) -> Allocator:
        """An allocator over these locations, those with a daily capacity counted as capped."""
        network = Network(locations)
        capped = [i for i, loc in enumerate(network.locations) if loc.capacity_remaining is not None]
        return cls(network, capped, pool_size)

    def track(self, available: Sequence[Sequence[int]]) -> Callable[[tuple[int, int]], None]:
        """See `DepthIndex.track`."""
        return self._depth.track(available)

    def _by_signature(self, policy: AllocationPolicy) -> dict[_Where, StaticCandidates]:
        """The candidates kept for every policy that screens as this one does."""
        found = self._signatures.get(policy)
        if found is None:
            signature = (
                tuple(sorted(policy.eligible_location_types)),
                tuple(sorted(policy.floors.items())),
                policy.max_distance_km,
                policy.effective_ranking,
            )
            if len(self._static) >= CACHE_LIMIT or len(self._signatures) >= CACHE_LIMIT:
                self._forget()
            found = self._signatures[policy] = self._static.setdefault(signature, {})
        return found

    def _candidates(
        self, policy: AllocationPolicy, fulfillment: str, pickup: int, lat: float, lon: float
    ) -> StaticCandidates:
        key = (policy, lat, lon, fulfillment, pickup)
        found = self._recent.get(key)
        if found is None:
            kept = self._by_signature(policy)
            where = (lat, lon, fulfillment, pickup)
            found = kept.get(where)
            if found is None:
                distances = self.network.distances(lat, lon)
                found = screen_static(
                    self.network,
                    policy,
                    fulfillment,
                    pickup,
                    distances,
                    self.capped,
                    self._rank_mask,
                    self._type_of,
                )
                if self._kept >= CACHE_LIMIT:
                    self._forget()
                    kept = self._by_signature(policy)
                kept[where] = found
                self._kept += 1
            if len(self._recent) >= CACHE_LIMIT:
                self._recent.clear()
            self._recent[key] = found
        return found

    def _forget(self) -> None:
        """Start the candidate caches again from empty."""
        self._static.clear()
        self._signatures.clear()
        self._recent.clear()
        self._kept = 0

    def plan(
        self,
        lines: Sequence[tuple[int, int]],
        available: Sequence[Sequence[int]],
        capacity: Sequence[int],
        policy: AllocationPolicy,
        fulfillment: str,
        pickup: int,
        lat: float,
        lon: float,
        thresholds: Sequence[Sequence[int] | None] | None = None,
        searched: list[int] | None = None,
        trace: NoTrace = NO_TRACE,
    ) -> IndexedPicks:
        """Picks per line for `lines` of (sku index, qty); every line empty when the order is refused
        (not served in full and the policy allows no partial allocation). Lines are served in order: the
        stock and capacity one takes are not offered to the next.

        `pickup`: the index of the pickup location (-1: none). `thresholds[i][location]`: the low-stock
        threshold of line i's SKU (None: none): a location with less available than that gives nothing.
        `searched`, when given, receives the number of combinations searched per line; `trace` is told
        about every line's candidates."""
        static = self._candidates(policy, fulfillment, pickup, lat, lon)
        ranking = policy.effective_ranking
        tracked = available is self._depth.tracked
        taken: dict[tuple[int, int], int] = {}
        cap_used: dict[int, int] = {}
        out: IndexedPicks = []
        complete = True
        last = len(lines) - 1
        for index, (sku, qty) in enumerate(lines):
            row = available[sku]
            walk = tracked
            if taken:  # what the lines before took
                mine = [(loc, q) for (s, loc), q in taken.items() if s == sku]
                if mine:
                    row = list(row)
                    for loc, q in mine:
                        row[loc] -= q
                    walk = False
            caps = capacity
            if cap_used:
                caps = list(capacity)
                for loc, used in cap_used.items():
                    caps[loc] -= used
            low = thresholds[index] if thresholds is not None else None
            if static.fast:
                picks, tried = self._screened(
                    static, row, sku if walk else -1, caps, low, qty, ranking, policy, trace
                )
            else:
                picks, tried = self._searched(static, row, caps, low, qty, ranking, policy, trace)
            if searched is not None:
                searched.append(tried)
            got = 0
            if index < last:  # what it took is not offered to the lines after it
                for loc, q in picks:
                    got += q
                    taken[(sku, loc)] = taken.get((sku, loc), 0) + q
                    cap_used[loc] = cap_used.get(loc, 0) + q
            else:
                for _, q in picks:
                    got += q
            if got < qty:
                complete = False
            out.append(picks)
        if not complete and not policy.allow_partial:
            return [[] for _ in lines]
        return out

    def _searched(
        self,
        static: StaticCandidates,
        row: Sequence[int],
        caps: Sequence[int],
        low: Sequence[int] | None,
        qty: int,
        ranking: Sequence[str],
        policy: AllocationPolicy,
        trace: NoTrace,
    ) -> tuple[Picks, int]:
        """The search for any ranking: every candidate keyed by `location_key`."""
        ids, priority = self.network.ids, self.network.priority
        eligible: list[Candidate] = []
        for loc, distance, floor in static.listed:
            stock = row[loc]
            if stock <= floor or (low is not None and stock < low[loc]):  # no stock, below floor or low
                continue
            cap = caps[loc]
            if cap <= 0:
                continue
            giveable = stock - floor if stock - floor < cap else cap
            eligible.append(
                (location_key(ranking, distance, priority[loc], giveable, ids[loc]), loc, distance, giveable)
            )
        picks: Picks = []
        tried = 0
        pool: list[Candidate] = []
        if eligible:
            picks, tried, pool = choose(eligible, qty, policy, ranking, priority, ids, self.pool_size)
        if trace.recording:
            trace.line(static, row, low, caps, eligible, pool, picks)
        return picks, tried

    def _screened(
        self,
        static: StaticCandidates,
        row: Sequence[int],
        tracked: int,
        caps: Sequence[int],
        low: Sequence[int] | None,
        qty: int,
        ranking: Sequence[str],
        policy: AllocationPolicy,
        trace: NoTrace,
    ) -> tuple[Picks, int]:
        """The search for a ranking whose key order is depth order (`static.fast`). Every eligible candidate
        becomes one integer, giveable units above the bits of its complemented static rank, so that one
        sort of plain integers (descending) puts them in key order: deepest first, equal depths in static
        order. `tracked`: the SKU of `row` when it is a tracked row as it stands (-1 otherwise)."""
        if static.by_rank and tracked >= 0 and len(static.locs) > DEPTH_WALK_FROM and not trace.recording:
            found = self._depth.covering(static, tracked, row, caps, low, qty)
            if found is not None:
                return found
        bits = self._rank_bits
        if static.has_capacity:
            if low is None:
                keys = [
                    (g if (g := a - floor) < c else c) << bits | code
                    for loc, floor, code in static.coded
                    if (a := row[loc]) > floor and (c := caps[loc]) > 0
                ]
            else:
                keys = [
                    (g if (g := a - floor) < c else c) << bits | code
                    for loc, floor, code in static.coded
                    if (a := row[loc]) > floor and a >= low[loc] and (c := caps[loc]) > 0
                ]
        elif low is None:
            keys = [
                (a - floor) << bits | code for loc, floor, code in static.coded if (a := row[loc]) > floor
            ]
        else:
            keys = [
                (a - floor) << bits | code
                for loc, floor, code in static.coded
                if (a := row[loc]) > floor and a >= low[loc]
            ]
        if not keys:
            if trace.recording:
                trace.line(static, row, low, caps, [], [], [])
            return [], 0
        keys.sort(reverse=True)
        mask = self._rank_mask
        cands: list[Candidate] | None = None
        if static.by_rank and keys[0] >> bits >= qty:
            # Fewest splits first, no stock level, and the deepest location covers the line: the search
            # pool is the `size` deepest, and among those that cover the line (a prefix) every one scores
            # by its static criteria alone, so the one first in static order (largest code) wins.
            size = min(len(keys), self._single_pool)
            covering = qty << bits
            if keys[size - 1] >= covering:  # the whole pool covers the line (always so for one unit)
                best = max(map(mask.__and__, keys[:size]))
            else:
                best = max(k & mask for k in keys[:size] if k >= covering)
            picks, tried, pooled = [(static.locs[mask - best], qty)], size, size
        elif ranking[0] == "fewest_splits" and keys[0] >> bits >= qty:
            # The stock level is ranked too, before every static criterion, and the deepest location
            # covers the line: a single location is searched for, and the deepest (first in key order)
            # wins.
            size = min(len(keys), self._single_pool)
            picks, tried, pooled = [(static.locs[mask - (keys[0] & mask)], qty)], size, size
        else:
            cands = self._decoded(static, keys)
            picks, tried, pool = choose(
                cands,
                qty,
                policy,
                ranking,
                self.network.priority,
                self.network.ids,
                self.pool_size,
                in_depth_order=True,
            )
            pooled = len(pool)
        if trace.recording:
            if cands is None:
                cands = self._decoded(static, keys)
            trace.line(static, row, low, caps, cands, cands[:pooled], picks)
        return picks, tried

    def _decoded(self, static: StaticCandidates, keys: Sequence[int]) -> list[Candidate]:
        """The candidates of sort keys (in key order, as `choose` takes them: the negated sort key first)."""
        bits, mask = self._rank_bits, self._rank_mask
        locs, dists = static.locs, static.dists
        out: list[Candidate] = []
        for k in keys:
            rank = mask - (k & mask)
            out.append((-k, locs[rank], dists[rank], k >> bits))
        return out
