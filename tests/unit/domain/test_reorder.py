"""Reorder: projected position, trigger, rounding by the explicit policy, cap, review and demand rate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.domain.errors import PolicyError
from service.domain.reorder import (
    Position,
    ReorderPolicy,
    decay_demand_rate,
    decide_reorder,
    promotion_flags,
    round_quantity,
    update_demand_rate,
)


def test_projected_position_counts_in_transit_and_removes_reserved_but_not_return_pending() -> None:
    assert Position(sellable=10, reserved=3, in_transit=5, return_pending=4).projected == 12


def test_no_reorder_above_the_reorder_point() -> None:
    decision = decide_reorder(Position(20, 0, 0, 0), ReorderPolicy(10, 40), 6)
    assert (decision.reorder, decision.qty, decision.release) == (False, 0, "none")


def test_reorder_at_the_reorder_point_up_to_the_order_up_to_level() -> None:
    decision = decide_reorder(Position(10, 0, 0, 0), ReorderPolicy(10, 40, rounding="none"), 6)
    assert (decision.reorder, decision.qty) == (True, 30)


def test_up_to_case_pack_rounds_up_to_whole_cases() -> None:
    assert round_quantity(13, 6, "up_to_case_pack", None) == (18, False)


def test_nearest_case_pack_rounds_to_the_nearest_whole_case() -> None:
    assert round_quantity(14, 6, "nearest_case_pack", None) == (12, False)
    assert round_quantity(15, 6, "nearest_case_pack", None) == (18, False)


def test_nearest_case_pack_orders_one_case_for_a_small_positive_need() -> None:
    assert round_quantity(1, 12, "nearest_case_pack", None) == (12, False)


def test_rounding_never_goes_above_the_maximum_and_stays_in_whole_cases() -> None:
    assert round_quantity(40, 6, "up_to_case_pack", 40) == (36, True)


def test_no_rounding_is_capped_at_the_maximum_itself() -> None:
    assert round_quantity(40.2, 6, "none", 40) == (40, True)


def test_a_maximum_below_one_case_means_no_reorder() -> None:
    decision = decide_reorder(Position(0, 0, 0, 0), ReorderPolicy(5, 20, max_qty=4), 6)
    assert (decision.reorder, decision.qty, decision.capped) == (False, 0, True)


def test_review_flag_sends_the_order_to_a_planner() -> None:
    decision = decide_reorder(Position(0, 0, 0, 0), ReorderPolicy(5, 20, review=True), 1)
    assert decision.release == "review"


def test_an_order_without_review_is_released_automatically() -> None:
    decision = decide_reorder(Position(0, 0, 0, 0), ReorderPolicy(5, 20), 1)
    assert decision.release == "auto_release"


def test_the_breakdown_shows_the_position_and_the_rounding() -> None:
    decision = decide_reorder(Position(4, 1, 2, 3), ReorderPolicy(10, 30), 6)
    breakdown = decision.breakdown()
    assert breakdown["position"] == {
        "sellable": 4,
        "reserved": 1,
        "in_transit": 2,
        "return_pending": 3,
        "projected": 5,
    }
    assert (breakdown["raw_qty"], breakdown["rounding"], decision.qty) == (25, "up_to_case_pack", 30)


def test_a_policy_with_order_up_to_below_the_reorder_point_is_refused() -> None:
    with pytest.raises(PolicyError) as err:
        ReorderPolicy.from_result({"reorder_point": 10, "order_up_to": 5})
    assert err.value.key == "order_up_to"


def test_an_unknown_rounding_policy_is_refused() -> None:
    with pytest.raises(PolicyError) as err:
        ReorderPolicy.from_result({"reorder_point": 1, "order_up_to": 5, "rounding": "up"})
    assert err.value.key == "rounding"


def test_steady_sales_converge_to_their_true_rate() -> None:
    rate = 0.0
    for _ in range(200):
        rate = update_demand_rate(rate, 6, 2.0)
    assert rate == pytest.approx(3.0, rel=1e-6)


def test_the_rate_halves_after_one_half_life_without_sales() -> None:
    assert decay_demand_rate(8.0, 7.0, half_life_days=7.0) == pytest.approx(4.0)


def test_a_sale_at_the_same_instant_stays_finite() -> None:
    assert update_demand_rate(1.0, 5, 0.0) > 1.0


def test_a_promotion_is_upcoming_when_it_starts_within_the_lead_time_and_not_while_it_runs() -> None:
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    day = timedelta(days=1)
    running = (now - day, now + day)
    in_two_days = (now + 2 * day, now + 3 * day)
    assert promotion_flags([], now, 5) == (False, False)
    assert promotion_flags([running], now, 5) == (True, False)
    assert promotion_flags([in_two_days], now, 2) == (False, True)
    assert promotion_flags([in_two_days], now, 1) == (False, False)
    # a lead time under a day still looks one day ahead
    assert promotion_flags([(now + day, now + 2 * day)], now, 0) == (False, True)
    assert promotion_flags([running, in_two_days], now, 3) == (True, True)
    assert promotion_flags([(now - 2 * day, now)], now, 3) == (False, False)  # ended: the end is not in it
