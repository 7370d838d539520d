"""The demand rate the ledger keeps per (sku, location) from applied POS sales, and its `store.demand` reader.

Every applied `sale` event updates an exponentially weighted daily rate with
`service.domain.reorder.update_demand_rate` (half-life `HALF_LIFE_DAYS`) at the sale's time (`at`, or the
time it is applied when absent). A sale older than the last update is folded in at the last update's
time (elapsed 0): the state never goes back in time. A duplicate event changes nothing. Reading decays
the stored rate to the reading time with `decay_demand_rate`, so a location that stops selling fades.
Times are epoch milliseconds on every backend (the Redis Lua computes the same formula on the same
integers), so all backends agree to rounding.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import NamedTuple

from service.domain.reorder import decay_demand_rate, update_demand_rate

HALF_LIFE_DAYS = 7.0
MS_PER_DAY = 86_400_000

Pair = tuple[str, str]


class DemandState(NamedTuple):
    """Units per day as of `at_ms`, the time of the last sale folded in."""

    rate: float
    at_ms: int


def to_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def after_sale(state: DemandState | None, qty: int, at_ms: int) -> DemandState:
    """The state after a sale of `qty` units at `at_ms`; the first sale starts from a rate of 0."""
    if state is None:
        return DemandState(update_demand_rate(0.0, qty, 0.0, HALF_LIFE_DAYS), at_ms)
    elapsed_ms = max(0, at_ms - state.at_ms)
    rate = update_demand_rate(state.rate, qty, elapsed_ms / MS_PER_DAY, HALF_LIFE_DAYS)
    return DemandState(rate, max(at_ms, state.at_ms))


def rate_at(state: DemandState, now_ms: int) -> float:
    """The rate read at `now_ms`: decayed since the last sale, never grown by reading in the past."""
    return decay_demand_rate(state.rate, max(0, now_ms - state.at_ms) / MS_PER_DAY, HALF_LIFE_DAYS)


class LedgerDemand:
    """`store.demand`: the decisions' `DemandSource`, reading a backend's kept states at its clock's time."""

    def __init__(
        self,
        load: Callable[[Sequence[Pair]], Awaitable[dict[Pair, DemandState]]],
        clock: Callable[[], datetime],
    ) -> None:
        self._load = load
        self._clock = clock

    async def states(self, pairs: Sequence[Pair]) -> dict[Pair, DemandState]:
        """The stored (undecayed) state of each pair that has had a sale."""
        unique = list(dict.fromkeys(pairs))
        return await self._load(unique) if unique else {}

    async def rates(self, pairs: Sequence[Pair]) -> dict[Pair, float]:
        """Daily rate per (sku, location) decayed to now, for the pairs that have had a sale."""
        states = await self.states(pairs)
        now_ms = to_ms(self._clock())
        return {pair: rate_at(state, now_ms) for pair, state in states.items()}
