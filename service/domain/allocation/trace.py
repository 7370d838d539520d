"""Trace collection: what `Allocator.plan` tells about every candidate of every line. `NO_TRACE` keeps
nothing (the plan then takes its shortcuts); a `CandidateRecorder` keeps, per line, why each location was
used or dropped, as the full trace shows it."""

from __future__ import annotations

from collections.abc import Sequence

from service.domain.allocation.candidates import Network, StaticCandidates, static_drop, stock_drop
from service.domain.allocation.model import AllocationPolicy, CandidateTrace
from service.domain.allocation.ranking import score
from service.domain.allocation.search import Candidate, Picks


class NoTrace:
    """Keeps nothing: `Allocator.plan` only asks it whether it records."""

    __slots__ = ()
    recording = False

    def line(
        self,
        static: StaticCandidates,
        stock: Sequence[int],
        low: Sequence[int] | None,
        capacity: Sequence[int],
        eligible: Sequence[Candidate],
        pool: Sequence[Candidate],
        picks: Picks,
    ) -> None:
        """One line searched: `stock`, `low` and `capacity` per location as the line saw them (after the
        lines before it), `eligible` in key order, the search `pool` and the `picks`."""


NO_TRACE = NoTrace()


class CandidateRecorder(NoTrace):
    """Records, per line, a `CandidateTrace` of every location: the eligible ones in key order (chosen,
    not chosen, or outside the search pool, with their own score), then those dropped, with the reason."""

    __slots__ = ("distances", "fulfillment", "lines", "network", "pickup", "policy")
    recording = True

    def __init__(
        self,
        network: Network,
        policy: AllocationPolicy,
        fulfillment: str,
        pickup: int,
        lat: float,
        lon: float,
    ) -> None:
        self.network = network
        self.policy = policy
        self.fulfillment = fulfillment
        self.pickup = pickup
        self.distances = network.distances(lat, lon)
        self.lines: list[tuple[CandidateTrace, ...]] = []

    def line(
        self,
        static: StaticCandidates,
        stock: Sequence[int],
        low: Sequence[int] | None,
        capacity: Sequence[int],
        eligible: Sequence[Candidate],
        pool: Sequence[Candidate],
        picks: Picks,
    ) -> None:
        net, policy, distances = self.network, self.policy, self.distances
        ranking = policy.effective_ranking
        chosen = {loc for loc, _ in picks}
        in_pool = {c[1] for c in pool}
        traces: list[CandidateTrace] = []
        for _, loc, distance, giveable in eligible:
            status = "chosen" if loc in chosen else "not_chosen" if loc in in_pool else "outside_search_pool"
            values = score([(loc, giveable, distance, giveable)], ranking, net.priority)
            traces.append(
                CandidateTrace(
                    net.ids[loc],
                    net.types[loc],
                    distance,
                    stock[loc],
                    static.floor_of[loc],
                    giveable,
                    status,
                    None,
                    dict(zip(ranking, values, strict=True)),
                )
            )
        listed = {c[1] for c in eligible}
        for loc in range(len(net.ids)):
            if loc in listed:
                continue
            floor = static.floor_of[loc]
            reason = None
            if floor < 0:  # not a candidate whatever its stock
                floor = policy.floor_for(net.types[loc])
                reason = static_drop(net, loc, policy, self.fulfillment, self.pickup, distances[loc])
            if reason is None:
                reason = stock_drop(stock[loc], floor, 0 if low is None else low[loc], capacity[loc])
            traces.append(
                CandidateTrace(
                    net.ids[loc],
                    net.types[loc],
                    distances[loc],
                    max(0, stock[loc]),
                    floor,
                    0,
                    "dropped",
                    reason,
                )
            )
        self.lines.append(tuple(traces))
