"""Facts computed for transfer and markdown rulesets."""

from __future__ import annotations

from datetime import date

import pytest

from service.domain.errors import InvalidInput
from service.domain.markdown import NO_DEMAND_WEEKS, NO_SEASON_DAYS, MarkdownRequest, markdown_facts
from service.domain.transfer import TransferRequest, TransferSide, transfer_facts

SOURCE = TransferSide("s1", "store", "north", available=12, open_promotions=1)
DEST = TransferSide("s2", "store", "south", available=0, open_promotions=0)


def test_transfer_facts_give_the_source_available_after_and_the_value() -> None:
    facts = transfer_facts(
        TransferRequest("t1", "A", 5, "stockout", "store_manager"),
        SOURCE,
        DEST,
        source_floor=3,
        unit_value=8.5,
    )
    assert facts["source"]["available_after"] == 7
    assert facts["transfer"]["value"] == 42.5
    assert facts["same_region"] is False


def test_a_transfer_to_its_own_source_is_invalid() -> None:
    with pytest.raises(InvalidInput) as err:
        transfer_facts(TransferRequest("t1", "A", 1, "x", "r"), SOURCE, SOURCE, source_floor=0, unit_value=1)
    assert err.value.field == "to_location"


def request(current: float = 40.0, proposed: float = 30.0) -> MarkdownRequest:
    return MarkdownRequest("m1", "A", current, proposed, date(2026, 11, 1), "merchandiser")


def test_markdown_depth_and_margin_after_come_from_prices_and_cost() -> None:
    facts = markdown_facts(
        request(),
        cost=21.0,
        category="apparel",
        units=70,
        daily_rate=2.0,
        season_end=None,
        promo_active=False,
    )
    assert facts["markdown"]["depth"] == 0.25
    assert facts["markdown"]["margin_after"] == 0.3


def test_markdown_exposure_and_weeks_of_supply() -> None:
    facts = markdown_facts(
        request(),
        cost=21.0,
        category="apparel",
        units=70,
        daily_rate=2.0,
        season_end=date(2026, 11, 29),
        promo_active=False,
    )
    assert facts["stock"] == {"units": 70, "value": 2800.0, "weeks_of_supply": 5.0}
    assert facts["season"]["days_to_end"] == 28


def test_markdown_without_demand_or_season_uses_the_documented_sentinels() -> None:
    facts = markdown_facts(
        request(), cost=1.0, category="x", units=5, daily_rate=0.0, season_end=None, promo_active=False
    )
    assert facts["stock"]["weeks_of_supply"] == NO_DEMAND_WEEKS
    assert facts["season"]["days_to_end"] == NO_SEASON_DAYS


def test_a_markdown_that_raises_the_price_is_invalid() -> None:
    with pytest.raises(InvalidInput) as err:
        markdown_facts(
            request(30.0, 35.0),
            cost=1.0,
            category="x",
            units=5,
            daily_rate=0.0,
            season_end=None,
            promo_active=False,
        )
    assert err.value.field == "proposed_price"
