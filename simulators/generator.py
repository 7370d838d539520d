"""Deterministic event generator: a scenario and its seed give one event stream, always the same.

Each stream (online orders, till sales, returns) draws from its own `random.Random`, seeded from the
scenario seed and the stream's name, so that changing the return rate does not change the orders. Nothing
here iterates a set or reads the global random state.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from datetime import timedelta

from simulators.events import Event, Order, OrderLine, Receipt, Return, Sale
from simulators.scenario import WEEKDAYS, Demand, Location, Promotion, SkuInfo, World, check_generator


def _cumulative(weights: list[float]) -> list[float]:
    total = 0.0
    out: list[float] = []
    for weight in weights:
        total += weight
        out.append(total)
    return out


def _pick(rng: random.Random, cumulative: list[float]) -> int:
    return min(bisect.bisect_right(cumulative, rng.random() * cumulative[-1]), len(cumulative) - 1)


def _table(table: dict[int, float]) -> tuple[list[int], list[float]]:
    keys = sorted(table)
    return keys, _cumulative([float(table[k]) for k in keys])


def _curve(promo: Promotion, hours_in: float) -> float:
    points = sorted(promo.curve)
    if not points:
        return 1.0
    if hours_in <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if hours_in <= x1:
            return y0 + (y1 - y0) * (hours_in - x0) / (x1 - x0) if x1 > x0 else y1
    return points[-1][1]


def _applies(world: World, index: int, sku: SkuInfo, channel: str, location: str | None) -> bool:
    promo = world.scenario.promotions[index]
    if promo.channels and channel not in promo.channels:
        return False
    if not (sku.id in promo.skus or sku.category in promo.categories):
        return False
    scope = world.promo_scope[index] if index < len(world.promo_scope) else None
    return location is None or scope is None or location in scope


def promo_multiplier(
    world: World, sku: SkuInfo, channel: str, hour: float, location: str | None = None
) -> float:
    """Demand multiplier of a SKU in a channel at a number of hours after the scenario start, at a location
    (None: a promotion at any location counts, as the service's allocation reads the calendar)."""
    moment = world.start + timedelta(hours=hour)
    best = 1.0
    for index, promo in enumerate(world.scenario.promotions):
        if not (promo.start <= moment < promo.end) or not _applies(world, index, sku, channel, location):
            continue
        hours_in = (moment - promo.start).total_seconds() / 3600.0
        uplift = 1.0 if promo.uplift is None else promo.uplift
        best = max(best, 1.0 + (uplift - 1.0) * _curve(promo, hours_in))
    return best


def promo_active(world: World, sku: SkuInfo, channel: str, hour: float, location: str | None = None) -> bool:
    """A promotion of the SKU runs in the channel at that hour (at the location; None: at any)."""
    moment = world.start + timedelta(hours=hour)
    return any(
        promo.start <= moment < promo.end and _applies(world, index, sku, channel, location)
        for index, promo in enumerate(world.scenario.promotions)
    )


def _scoped(world: World, channel: str, hour: float) -> list[int]:
    """The promotions limited to some locations that run in the channel at that hour."""
    moment = world.start + timedelta(hours=hour)
    scopes = world.promo_scope
    return [
        index
        for index, promo in enumerate(world.scenario.promotions)
        if index < len(scopes)
        and scopes[index] is not None
        and promo.start <= moment < promo.end
        and (not promo.channels or channel in promo.channels)
    ]


class _Zones:
    """Where customers are: around the stores, each store's neighbourhood equally likely."""

    def __init__(self, locations: list[Location]) -> None:
        stores = [loc for loc in locations if loc.type == "store"] or list(locations)
        self.stores = stores
        pickup = [loc for loc in locations if loc.pickup]
        # The pickup store a customer of each zone would choose: the nearest store offering pickup.
        self.pickup_for: list[Location | None] = []
        for store in stores:
            if store.pickup or not pickup:
                self.pickup_for.append(store if store.pickup else None)
            else:
                self.pickup_for.append(min(pickup, key=lambda p: (_km2(store, p), p.id)))


def _km2(a: Location, b: Location) -> float:
    return (a.lat - b.lat) ** 2 + ((a.lon - b.lon) * math.cos(math.radians(a.lat))) ** 2


def generate_events(world: World) -> list[Event]:
    """The whole event stream of a scenario, sorted by time (ties keep generation order).

    A promotion limited to some locations lifts the till sales of those stores and the online demand of
    the customers around them (each store's neighbourhood is a zone, see `_Zones`)."""
    scenario = world.scenario
    check_generator(scenario)
    seed = scenario.seed
    order_rng = random.Random(f"{seed}:orders")
    sale_rng = random.Random(f"{seed}:sales")
    return_rng = random.Random(f"{seed}:returns")
    zones = _Zones(world.locations)
    channels = {channel.id: channel for channel in world.channels}
    stores = zones.stores
    skus = world.skus
    base_weights = [sku.popularity for sku in skus]
    base_total = sum(base_weights)
    returns = scenario.returns
    events: list[Event] = []
    order_number = 0
    sale_number = 0
    return_number = 0
    horizon = scenario.duration_hours * 3600

    def maybe_return(at: int, sku: str, qty: int, order_id: str | None, location: str | None) -> None:
        nonlocal return_number
        if returns.rate <= 0 or return_rng.random() >= returns.rate:
            return
        lag = return_rng.uniform(returns.lag_hours[0], returns.lag_hours[1])
        restock = return_rng.random() < returns.restock_share
        when = at + int(lag * 3600)
        if when < horizon:
            return_number += 1
            events.append(Return(when, f"R{return_number:07d}", sku, qty, order_id, location, restock))

    plans: list[tuple[Demand, list[int], list[float], list[int], list[float], list[str], list[float],
                      list[str], list[float]]] = []  # fmt: skip
    for demand in scenario.demand:
        channel = channels[demand.channel]
        line_keys, line_cum = _table(demand.lines)
        unit_keys, unit_cum = _table(demand.units)
        modes = [m for m in ("ship", "pickup", "ship_from_store") if channel.fulfillment.get(m, 0) > 0]
        mode_cum = _cumulative([channel.fulfillment[m] for m in modes])
        tiers = sorted(channel.customer_tiers)
        tier_cum = _cumulative([channel.customer_tiers[t] for t in tiers])
        plans.append((demand, line_keys, line_cum, unit_keys, unit_cum, modes, mode_cum, tiers, tier_cum))

    for hour in range(scenario.duration_hours):
        moment = world.start + timedelta(hours=hour)
        weekday = WEEKDAYS[moment.weekday()]
        base = hour * 3600
        for demand, line_keys, line_cum, unit_keys, unit_cum, modes, mode_cum, tiers, tier_cum in plans:
            channel = channels[demand.channel]
            weights = [w * promo_multiplier(world, sku, channel.id, hour + 0.5) for w, sku in
                       zip(base_weights, skus, strict=True)]  # fmt: skip
            sku_cum = _cumulative(weights)
            uplift = sku_cum[-1] / base_total
            base_rate = demand.rate * demand.hour_of_day[moment.hour] * demand.day_of_week.get(weekday, 1.0)
            # per zone (store), when a promotion limited to some locations runs: its own SKU weights
            zone_cum: list[list[float]] | None = None
            scoped = _scoped(world, channel.id, hour + 0.5)
            if scoped:
                by_signature: dict[tuple[int, ...], list[float]] = {}
                zone_cum = []
                for store in stores:
                    signature = tuple(i for i in scoped if store.id in (world.promo_scope[i] or ()))
                    if signature not in by_signature:
                        by_signature[signature] = _cumulative(
                            [w * promo_multiplier(world, sku, channel.id, hour + 0.5, store.id)
                             for w, sku in zip(base_weights, skus, strict=True)]
                        )  # fmt: skip
                    zone_cum.append(by_signature[signature])
            if channel.kind == "pos":
                for zone, store in enumerate(stores):
                    store_cum = sku_cum if zone_cum is None else zone_cum[zone]
                    rate = base_rate * (uplift if zone_cum is None else store_cum[-1] / base_total)
                    if rate <= 0:
                        continue
                    offset = sale_rng.expovariate(rate)
                    while offset < 1.0:
                        at = base + int(offset * 3600)
                        sku = skus[_pick(sale_rng, store_cum)].id
                        qty = int(unit_keys[_pick(sale_rng, unit_cum)])
                        sale_number += 1
                        events.append(Sale(at, f"S{sale_number:07d}", channel.id, store.id, sku, qty))
                        maybe_return(at, sku, qty, None, store.id)
                        offset += sale_rng.expovariate(rate)
                continue
            zones_cum: list[float] | None = None
            if zone_cum is not None:
                # customers of a zone order in proportion to their zone's uplift
                zones_cum = _cumulative([cum[-1] for cum in zone_cum])
                uplift = zones_cum[-1] / (base_total * len(stores))
            rate = base_rate * uplift
            if rate <= 0:
                continue
            offset = order_rng.expovariate(rate)
            while offset < 1.0:
                at = base + int(offset * 3600)
                order_number += 1
                order_id = f"O{order_number:07d}"
                zone = -1 if zones_cum is None else _pick(order_rng, zones_cum)
                order_cum = sku_cum if zone_cum is None else zone_cum[zone]
                count = int(line_keys[_pick(order_rng, line_cum)])
                lines: dict[str, int] = {}
                for _ in range(count):
                    sku = skus[_pick(order_rng, order_cum)].id
                    lines[sku] = lines.get(sku, 0) + int(unit_keys[_pick(order_rng, unit_cum)])
                mode = modes[_pick(order_rng, mode_cum)]
                if zone < 0:
                    zone = order_rng.randrange(len(stores))
                home = stores[zone]
                pickup_store = zones.pickup_for[zone] if mode == "pickup" else None
                if mode == "pickup" and pickup_store is None:
                    mode = "ship"
                tier = tiers[_pick(order_rng, tier_cum)]
                order_lines = tuple(OrderLine(sku, qty) for sku, qty in lines.items())
                events.append(
                    Order(at, order_id, channel.id, mode, home.region, home.lat, home.lon, order_lines,  # type: ignore[arg-type]
                          pickup_store.id if pickup_store else None, tier)
                )  # fmt: skip
                for line in order_lines:
                    maybe_return(at, line.sku, line.qty, order_id, None)
                offset += order_rng.expovariate(rate)
    for number, inbound in enumerate(scenario.inbound, start=1):
        at = int(inbound.at_hours * 3600)
        if at < horizon:
            events.append(Receipt(at, f"I{number:05d}", inbound.location, inbound.sku, inbound.qty))
    events.sort(key=lambda event: event.at)
    return events
