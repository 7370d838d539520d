"""Scenario documents: what they expand to, and how a mistake is reported."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from simulators.scenario import ScenarioError, World, load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[3] / "simulators" / "scenarios"


def _small_with(change: dict[str, object]) -> str:
    document = yaml.safe_load((SCENARIOS / "small.yaml").read_text())
    document.update(change)
    return yaml.safe_dump(document)


def test_the_weekend_promotion_has_120_stores_two_dcs_and_the_channels_it_promises() -> None:
    world = load_scenario(SCENARIOS / "weekend-promo.yaml").build()
    types = [loc.type for loc in world.locations]
    assert types.count("store") == 120
    assert types.count("dc") == 2
    channels = {c.id: c for c in world.channels}
    assert {"ecommerce", "marketplace", "click_and_collect", "store_pos"} <= set(channels)
    assert channels["marketplace"].view.mode == "batch"
    assert any(loc.ship_from_store for loc in world.locations)
    assert channels["click_and_collect"].fulfillment == {"pickup": 1.0}


def test_store_groups_expand_to_the_same_stores_every_time(small_world: World) -> None:
    again = load_scenario(SCENARIOS / "small.yaml").build()
    assert [(loc.id, loc.lat, loc.lon) for loc in again.locations] == [
        (loc.id, loc.lat, loc.lon) for loc in small_world.locations
    ]


def test_starting_stock_by_location_id_wins_over_stock_by_type(small_world: World) -> None:
    assert small_world.starting_stock["LAMP"]["DS-1"] == 6
    assert small_world.starting_stock["LAMP"]["N-001"] == 4
    assert small_world.starting_stock["MUG"]["DS-1"] == 0


def test_a_wrong_type_names_the_path_of_the_field() -> None:
    text = _small_with({"skus": [{"id": "A", "category": "c", "price": "cheap", "cost": 1}]})
    with pytest.raises(ScenarioError) as error:
        parse_scenario(text)
    assert error.value.path == "$.skus[0].price"


def test_an_unknown_field_is_refused_with_its_path() -> None:
    text = _small_with({"returns": {"rate": 0.1, "lag": 3}})
    with pytest.raises(ScenarioError) as error:
        parse_scenario(text)
    assert error.value.path == "$.returns"
    assert "lag" in error.value.message


def test_demand_for_an_undeclared_channel_is_refused() -> None:
    text = _small_with({"demand": [{"channel": "kiosk", "rate": 1}]})
    with pytest.raises(ScenarioError) as error:
        parse_scenario(text)
    assert error.value.path == "$.demand[0].channel"


def test_a_batch_view_without_a_sync_period_is_refused() -> None:
    text = _small_with({"channels": [{"id": "m", "kind": "online", "view": {"mode": "batch"}}], "demand": []})
    with pytest.raises(ScenarioError) as error:
        parse_scenario(text)
    assert error.value.path == "$.channels[0].view.sync_every_hours"


def test_stock_for_an_unknown_location_is_refused() -> None:
    text = _small_with(
        {"skus": [{"id": "A", "category": "toys", "price": 2, "cost": 1, "stock": {"XX-9": 3}}]}
    )
    with pytest.raises(ScenarioError) as error:
        parse_scenario(text)
    assert error.value.path == "$.skus[0].stock.XX-9"


def test_a_promotion_on_an_unknown_category_is_refused() -> None:
    document = yaml.safe_load((SCENARIOS / "small.yaml").read_text())
    document["promotions"][0]["categories"] = ["garden"]
    with pytest.raises(ScenarioError) as error:
        parse_scenario(yaml.safe_dump(document))
    assert error.value.path == "$.promotions[0].categories[0]"


def test_hour_of_day_needs_24_values() -> None:
    text = _small_with({"demand": [{"channel": "ecommerce", "rate": 1, "hour_of_day": [1.0] * 23}]})
    with pytest.raises(ScenarioError) as error:
        parse_scenario(text)
    assert error.value.path == "$.demand[0].hour_of_day"
