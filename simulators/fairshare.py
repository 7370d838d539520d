"""Fair-share allocation of a DC's stock between the stores that ordered from it and its own channels.

A review collects the store reorders a DC must fill. When its spare stock (what it holds above the floor
the availability ruleset keeps back from transfers) covers every order, every order is sent as raised.
When it does not, the DC's stock is shared so that every party runs out at the same time: the DC keeps
what its own channels (e-commerce, the marketplace, whatever it ships) sell over the common cover time,
and each ordering store gets what lifts its projected position to the same number of days of its own
demand, never more than it ordered. A store already above that cover gets nothing; so does a store whose
demand rate is 0, unless the DC's own channels sell none of it (then what the cover leaves goes to the
orders in turn). The cover time is the largest that the spare stock can pay for (found by bisection on a
function that grows with it), the shares are whole units (broken case packs), rounded down.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

# bisection steps on the cover time: the shares are whole units, so 60 halvings settle them
_STEPS = 60


class StoreNeed(msgspec.Struct, frozen=True):
    """One store's reorder: its daily demand rate, its projected position, the units it ordered."""

    rate: float
    position: int
    qty: int


def _needed(days: float, own_rate: float, needs: Sequence[StoreNeed]) -> float:
    """Units that `days` of cover take: the DC's own channels' and each store's top-up (up to its order)."""
    total = days * own_rate
    for need in needs:
        top_up = days * need.rate - need.position
        if top_up > 0:
            total += min(need.qty, top_up)
    return total


def fair_shares(spare: int, own_rate: float, needs: Sequence[StoreNeed]) -> list[int]:
    """Units each store gets of `spare`, in the order of `needs`: all it ordered when the orders fit in
    `spare`, else its share at the common cover time (see the module's text). Never more than `spare` in all.
    """
    if spare <= 0:
        return [0] * len(needs)
    if sum(need.qty for need in needs) <= spare:
        return [need.qty for need in needs]
    rates = own_rate + sum(need.rate for need in needs)
    if rates <= 0:
        return [0] * len(needs)
    low = 0.0
    # a cover time whose needs exceed the spare stock: the DC's spare over every rate, plus the longest
    # time a store's position already covers
    high = spare / rates + max((n.position / n.rate for n in needs if n.rate > 0), default=0.0) + 1.0
    for _ in range(_STEPS):
        if _needed(high, own_rate, needs) > spare:
            break
        high *= 2
    for _ in range(_STEPS):
        mid = (low + high) / 2
        if _needed(mid, own_rate, needs) <= spare:
            low = mid
        else:
            high = mid
    shares = [max(0, min(need.qty, int(low * need.rate - need.position))) for need in needs]
    if own_rate <= 0:
        # no channel of the DC's own sells it: what the stores' cover leaves goes to the orders in turn
        left = spare - sum(shares)
        for i, need in enumerate(needs):
            more = min(left, need.qty - shares[i])
            shares[i] += more
            left -= more
    assert sum(shares) <= spare
    return shares
