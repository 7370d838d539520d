"""The event generator: deterministic from the seed, shaped by demand and promotions."""

from __future__ import annotations

from simulators.events import Event, Order, Return, Sale
from simulators.generator import generate_events
from simulators.scenario import Scenario, World


def test_the_same_seed_gives_the_same_stream(small_world: World, small_events: list[Event]) -> None:
    assert generate_events(small_world) == small_events


def test_another_seed_gives_another_stream(small_scenario: Scenario, small_events: list[Event]) -> None:
    other = Scenario(**{f: getattr(small_scenario, f) for f in small_scenario.__struct_fields__})
    other.seed = small_scenario.seed + 1
    assert generate_events(other.build()) != small_events


def test_events_come_in_time_order_within_the_horizon(small_world: World, small_events: list[Event]) -> None:
    times = [event.at for event in small_events]
    assert times == sorted(times)
    assert times[0] >= 0 and times[-1] < small_world.scenario.duration_hours * 3600


def test_every_channel_with_demand_produces_events(small_events: list[Event]) -> None:
    channels = {e.channel for e in small_events if isinstance(e, Order | Sale)}
    assert channels == {"store_pos", "ecommerce", "marketplace"}


def test_the_promotion_lifts_demand_for_its_category_on_its_day(small_events: list[Event]) -> None:
    def toy_units(day: int) -> int:
        return sum(
            line.qty
            for e in small_events
            if isinstance(e, Order) and e.channel == "ecommerce" and e.at // 86400 == day
            for line in e.lines
            if line.sku.startswith("TOY")
        )

    assert toy_units(1) > 2 * toy_units(0)


def test_pickup_orders_name_a_pickup_store(small_world: World, small_events: list[Event]) -> None:
    pickup_stores = {loc.id for loc in small_world.locations if loc.pickup}
    pickups = [e for e in small_events if isinstance(e, Order) and e.fulfillment == "pickup"]
    assert pickups
    assert all(e.store in pickup_stores for e in pickups)


def test_returns_refer_to_an_earlier_order_or_a_store(small_events: list[Event]) -> None:
    seen: dict[str, int] = {}
    for event in small_events:
        if isinstance(event, Order):
            seen[event.id] = event.at
        elif isinstance(event, Return):
            assert (event.order_id in seen and seen[event.order_id] < event.at) or event.location is not None


def test_changing_the_return_rate_leaves_the_orders_alone(
    small_scenario: Scenario, small_events: list[Event]
) -> None:
    other = Scenario(**{f: getattr(small_scenario, f) for f in small_scenario.__struct_fields__})
    other.returns = type(small_scenario.returns)(rate=0.5)
    orders = [e for e in generate_events(other.build()) if isinstance(e, Order)]
    assert orders == [e for e in small_events if isinstance(e, Order)]
