"""The pure rules of the ledger's demand rate (service.stock.demand), shared by the memory and SQL backends."""

from __future__ import annotations

import math

from service.domain.reorder import update_demand_rate
from service.stock.demand import HALF_LIFE_DAYS, MS_PER_DAY, DemandState, after_sale, rate_at


def test_first_sale_starts_from_zero_at_its_time() -> None:
    assert after_sale(None, 7, 1_000) == DemandState(7 * math.log(2) / HALF_LIFE_DAYS, 1_000)


def test_late_sale_is_folded_in_at_the_last_update_time() -> None:
    state = DemandState(2.0, 5 * MS_PER_DAY)
    assert after_sale(state, 3, 4 * MS_PER_DAY) == DemandState(
        update_demand_rate(2.0, 3, 0.0, HALF_LIFE_DAYS), 5 * MS_PER_DAY
    )


def test_reading_before_the_last_update_does_not_grow_the_rate() -> None:
    assert rate_at(DemandState(2.0, 5 * MS_PER_DAY), 4 * MS_PER_DAY) == 2.0


def test_reading_one_half_life_later_halves_the_rate() -> None:
    state = DemandState(2.0, 0)
    assert math.isclose(rate_at(state, int(HALF_LIFE_DAYS * MS_PER_DAY)), 1.0, rel_tol=1e-12)


def test_steady_sales_converge_to_units_per_day() -> None:
    state = None
    for day in range(200):
        state = after_sale(state, 6, day * 2 * MS_PER_DAY)
    assert state is not None and math.isclose(state.rate, 3.0, rel_tol=1e-6)
