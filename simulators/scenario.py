"""Scenario model: the YAML a planner writes to describe a network, its demand and a promotion.

`load_scenario(path)` parses and validates a scenario file, reading the locations, items and starting
stock it names from files (`simulators.inputs`); `Scenario.build()` expands store groups and SKU ranges
into a flat, deterministic `World` that the event generator and the runner share.
Every validation error names the failing path in the document, e.g. `$.skus[2].price`, or the file, line
and field, e.g. `items.csv: line 7, price: expected a number, got "x"`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import yaml

from simulators.inputs import load_inputs
from simulators.scenario_model import (
    WEEKDAYS,
    Approvals,
    Channel,
    ChannelKind,
    Demand,
    Fulfillment,
    Inbound,
    Location,
    LocationType,
    Markdowns,
    Network,
    Promotion,
    Replenishment,
    Returns,
    ScenarioError,
    Sku,
    SkuInfo,
    StockView,
    StoreGroup,
    Transfers,
    ViewMode,
)

__all__ = [
    "WEEKDAYS",
    "Approvals",
    "Channel",
    "ChannelKind",
    "Demand",
    "Fulfillment",
    "Inbound",
    "Location",
    "LocationType",
    "Markdowns",
    "Network",
    "Promotion",
    "Replenishment",
    "Returns",
    "Scenario",
    "ScenarioError",
    "Sku",
    "SkuInfo",
    "StockView",
    "StoreGroup",
    "Transfers",
    "ViewMode",
    "World",
    "build_world",
    "check_generator",
    "load_scenario",
    "parse_scenario",
    "stock_table",
]


class Scenario(msgspec.Struct, forbid_unknown_fields=True, dict=True):
    """A scenario document. `items_file` and `stock_file` add SKUs (the `PUT /v1/items` shape) and starting
    stock (the `PUT /v1/stock` shape, or a `retail-policy stock export` snapshot); `demand` and the
    promotions' `uplift` are needed only to generate events, not to replay a log. `max_skipped_share`: the
    share of a replayed log's events that may be skipped before the run is refused."""

    name: str
    start: datetime
    duration_hours: int
    network: Network
    channels: list[Channel]
    skus: list[Sku] = msgspec.field(default_factory=list)
    demand: list[Demand] = msgspec.field(default_factory=list)
    items_file: str | None = None
    stock_file: str | None = None
    max_skipped_share: float = 0.01
    seed: int = 1
    description: str = ""
    promotions: list[Promotion] = msgspec.field(default_factory=list)
    returns: Returns = msgspec.field(default_factory=Returns)
    replenishment: Replenishment = msgspec.field(default_factory=Replenishment)
    transfers: Transfers = msgspec.field(default_factory=Transfers)
    approvals: Approvals = msgspec.field(default_factory=Approvals)
    markdowns: Markdowns = msgspec.field(default_factory=Markdowns)
    inbound: list[Inbound] = msgspec.field(default_factory=list)
    rulesets: dict[str, str] = msgspec.field(default_factory=dict)

    def build(self) -> World:
        return build_world(self)


# ---------------------------------------------------------------------------------------------------------
# The expanded world


class World(msgspec.Struct):
    """A scenario expanded to flat lists, in a fixed order, with the starting stock per (sku, location).

    `promo_scope[i]`: the location ids promotion `i` runs at (None: everywhere); `stock_skipped`: rows of
    the stock file left out, by reason (`unknown_sku`, `unknown_location`)."""

    scenario: Scenario
    start: datetime
    locations: list[Location]
    skus: list[SkuInfo]
    channels: list[Channel]
    starting_stock: dict[str, dict[str, int]]  # sku -> location -> units
    promo_scope: list[frozenset[str] | None] = msgspec.field(default_factory=list)
    stock_skipped: dict[str, int] = msgspec.field(default_factory=dict)

    def location(self, location_id: str) -> Location:
        for location in self.locations:
            if location.id == location_id:
                return location
        raise KeyError(location_id)


def _check(condition: bool, path: str, message: str) -> None:
    if not condition:
        raise ScenarioError(path, message)


def _scatter(rng: random.Random, lat: float, lon: float, spread_km: float) -> tuple[float, float]:
    # Uniform in a disc of radius spread_km; 111 km per degree of latitude.
    radius = spread_km * math.sqrt(rng.random())
    angle = rng.random() * 2 * math.pi
    dlat = radius * math.cos(angle) / 111.0
    dlon = radius * math.sin(angle) / (111.0 * max(math.cos(math.radians(lat)), 0.01))
    return round(lat + dlat, 5), round(lon + dlon, 5)


def _expand_locations(scenario: Scenario) -> list[Location]:
    rng = random.Random(f"network:{scenario.seed}")
    locations = list(scenario.network.locations)
    for index, group in enumerate(scenario.network.store_groups):
        path = f"$.network.store_groups[{index}]"
        _check(group.count >= 1, f"{path}.count", "must be at least 1")
        _check(0.0 <= group.ship_from_store_share <= 1.0, f"{path}.ship_from_store_share", "must be in 0..1")
        sfs_every = (1.0 / group.ship_from_store_share) if group.ship_from_store_share > 0 else math.inf
        for n in range(group.count):
            lat, lon = _scatter(rng, group.lat, group.lon, group.spread_km)
            # Spread ship-from-store stores evenly through the group rather than at random.
            sfs = math.floor((n + 1) / sfs_every) > math.floor(n / sfs_every)
            locations.append(
                Location(
                    id=f"{group.prefix}-{n + 1:03d}",
                    type=group.type,
                    region=group.region,
                    lat=lat,
                    lon=lon,
                    ship_from_store=sfs,
                    pickup=group.pickup,
                    daily_capacity=group.daily_capacity,
                )
            )
    seen: dict[str, int] = {}
    for index, location in enumerate(locations):
        _check(
            location.id not in seen, f"$.network.locations[{index}].id", f"duplicate location {location.id!r}"
        )
        _check(-90 <= location.lat <= 90, f"$.network.locations[{index}].lat", "must be in -90..90")
        _check(-180 <= location.lon <= 180, f"$.network.locations[{index}].lon", "must be in -180..180")
        seen[location.id] = index
    _check(bool(locations), "$.network", "declares no locations")
    return locations


def _expand_skus(scenario: Scenario) -> tuple[list[SkuInfo], list[int]]:
    """The SKUs in declaration order, with the index of the declaration each one came from."""
    skus: list[SkuInfo] = []
    origin: list[int] = []
    seen: set[str] = set()
    for index, sku in enumerate(scenario.skus):
        path = f"$.skus[{index}]"
        _check(sku.price > 0, f"{path}.price", "must be above 0")
        _check(sku.cost >= 0, f"{path}.cost", "must be 0 or more")
        _check(sku.case_pack >= 1, f"{path}.case_pack", "must be at least 1")
        _check(sku.count >= 1, f"{path}.count", "must be at least 1")
        _check(sku.popularity > 0, f"{path}.popularity", "must be above 0")
        _check(sku.lead_time_days >= 0, f"{path}.lead_time_days", "must be 0 or more")
        ids = [sku.id] if sku.count == 1 else [f"{sku.id}-{n + 1:03d}" for n in range(sku.count)]
        for sku_id in ids:
            _check(sku_id not in seen, f"{path}.id", f"duplicate SKU {sku_id!r}")
            seen.add(sku_id)
            skus.append(
                SkuInfo(
                    sku_id,
                    sku.category,
                    sku.price,
                    sku.cost,
                    sku.case_pack,
                    sku.lead_time_days,
                    sku.popularity,
                )
            )
            origin.append(index)
    _check(bool(skus), "$.skus", "declares no SKUs")
    return skus, origin


def stock_table(scenario: Scenario) -> dict[str, dict[str, int]]:
    """The starting stock read from the scenario's `stock_file`: sku -> location -> sellable units."""
    table: dict[str, dict[str, int]] = scenario.__dict__.get("stock_table", {})
    return table


def _starting_stock(
    scenario: Scenario, locations: list[Location], skus: list[SkuInfo], origin: list[int]
) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    by_id = {location.id for location in locations}
    types = {location.type for location in locations}
    stock: dict[str, dict[str, int]] = {}
    for index, spec in enumerate(scenario.skus):
        for key, units in spec.stock.items():
            path = f"$.skus[{index}].stock.{key}"
            _check(
                key in by_id or key in types,
                path,
                "is neither a location id nor a location type in the network",
            )
            _check(units >= 0, path, "must be 0 or more")
    table = stock_table(scenario)
    for sku, index in zip(skus, origin, strict=True):
        spec = scenario.skus[index]
        counted = table.get(sku.id, {})
        per_location: dict[str, int] = {}
        for location in locations:
            found = counted.get(location.id)
            per_location[location.id] = (
                spec.stock.get(location.id, spec.stock.get(location.type, 0)) if found is None else found
            )
        stock[sku.id] = per_location
    skipped: dict[str, int] = {}
    for sku_id, row in table.items():
        if sku_id not in stock:
            skipped["unknown_sku"] = skipped.get("unknown_sku", 0) + len(row)
        else:
            outside = sum(1 for location_id in row if location_id not in by_id)
            if outside:
                skipped["unknown_location"] = skipped.get("unknown_location", 0) + outside
    return stock, skipped


def _validate_references(scenario: Scenario, locations: list[Location], skus: list[SkuInfo]) -> None:
    channel_ids: set[str] = set()
    for index, channel in enumerate(scenario.channels):
        path = f"$.channels[{index}]"
        _check(channel.id not in channel_ids, f"{path}.id", f"duplicate channel {channel.id!r}")
        channel_ids.add(channel.id)
        if channel.view.mode == "batch":
            every = channel.view.sync_every_hours
            _check(
                every is not None and every > 0,
                f"{path}.view.sync_every_hours",
                "a batch view needs a period > 0",
            )
        for mode, share in channel.fulfillment.items():
            _check(
                mode in ("ship", "pickup", "ship_from_store"),
                f"{path}.fulfillment.{mode}",
                "expected ship, pickup or ship_from_store",
            )
            _check(share >= 0, f"{path}.fulfillment.{mode}", "must be 0 or more")
        _check(
            sum(channel.fulfillment.values()) > 0, f"{path}.fulfillment", "shares must add up to more than 0"
        )
        _check(
            sum(channel.customer_tiers.values()) > 0,
            f"{path}.customer_tiers",
            "shares must add up to more than 0",
        )
    _check(bool(channel_ids), "$.channels", "declares no channels")
    for index, demand in enumerate(scenario.demand):
        path = f"$.demand[{index}]"
        _check(demand.channel in channel_ids, f"{path}.channel", f"unknown channel {demand.channel!r}")
        _check(demand.rate >= 0, f"{path}.rate", "must be 0 or more")
        _check(len(demand.hour_of_day) == 24, f"{path}.hour_of_day", "needs 24 values, hour 0 to 23")
        for day in demand.day_of_week:
            _check(day in WEEKDAYS, f"{path}.day_of_week.{day}", f"expected one of {', '.join(WEEKDAYS)}")
        for key, table in (("lines", demand.lines), ("units", demand.units)):
            _check(
                bool(table) and all(k >= 1 for k in table),
                f"{path}.{key}",
                "keys must be counts of 1 or more",
            )
            _check(sum(table.values()) > 0, f"{path}.{key}", "weights must add up to more than 0")
    sku_ids = {sku.id for sku in skus}
    categories = {sku.category for sku in skus}
    for index, promo in enumerate(scenario.promotions):
        path = f"$.promotions[{index}]"
        _check(promo.end > promo.start, f"{path}.end", "must be after start")
        _check(promo.uplift is None or promo.uplift > 0, f"{path}.uplift", "must be above 0")
        _check(bool(promo.skus or promo.categories), path, "names no skus and no categories")
        for n, sku_id in enumerate(promo.skus):
            _check(sku_id in sku_ids, f"{path}.skus[{n}]", f"unknown SKU {sku_id!r}")
        for n, category in enumerate(promo.categories):
            _check(category in categories, f"{path}.categories[{n}]", f"no SKU has category {category!r}")
        for n, channel_id in enumerate(promo.channels):
            _check(channel_id in channel_ids, f"{path}.channels[{n}]", f"unknown channel {channel_id!r}")
    r = scenario.returns
    _check(0.0 <= r.rate <= 1.0, "$.returns.rate", "must be in 0..1")
    _check(0.0 <= r.restock_share <= 1.0, "$.returns.restock_share", "must be in 0..1")
    _check(
        0 <= r.lag_hours[0] <= r.lag_hours[1],
        "$.returns.lag_hours",
        "expected [min, max] with 0 <= min <= max",
    )
    location_ids = {location.id for location in locations}
    for index, inbound in enumerate(scenario.inbound):
        _check(
            inbound.location in location_ids,
            f"$.inbound[{index}].location",
            f"unknown location {inbound.location!r}",
        )
        _check(inbound.sku in sku_ids, f"$.inbound[{index}].sku", f"unknown SKU {inbound.sku!r}")
        _check(inbound.qty > 0, f"$.inbound[{index}].qty", "must be above 0")
    _check(scenario.duration_hours >= 1, "$.duration_hours", "must be at least 1")
    _check(0.0 <= scenario.max_skipped_share <= 1.0, "$.max_skipped_share", "must be in 0..1")
    for kind in scenario.rulesets:
        _check(
            kind in ("allocation", "availability", "reorder", "transfer", "markdown"),
            f"$.rulesets.{kind}",
            "expected a decision kind: allocation, availability, reorder, transfer or markdown",
        )


def _groups(scenario: Scenario, locations: list[Location]) -> dict[str, set[str]]:
    """Location groups by name: `network.groups`, store groups by prefix and regions, merged by name."""
    known = {location.id for location in locations}
    groups: dict[str, set[str]] = {}
    for name, ids in scenario.network.groups.items():
        for n, location_id in enumerate(ids):
            _check(location_id in known, f"$.network.groups.{name}[{n}]", f"unknown location {location_id!r}")
        groups.setdefault(name, set()).update(ids)
    for group in scenario.network.store_groups:
        groups.setdefault(group.prefix, set()).update(
            f"{group.prefix}-{n + 1:03d}" for n in range(group.count)
        )
    for location in locations:
        groups.setdefault(location.region, set()).add(location.id)
    return groups


def _promo_scope(scenario: Scenario, locations: list[Location]) -> list[frozenset[str] | None]:
    known = {location.id for location in locations}
    groups = _groups(scenario, locations)
    scopes: list[frozenset[str] | None] = []
    for index, promo in enumerate(scenario.promotions):
        path = f"$.promotions[{index}]"
        if not promo.locations and not promo.location_groups:
            scopes.append(None)
            continue
        scope: set[str] = set()
        for n, location_id in enumerate(promo.locations):
            _check(location_id in known, f"{path}.locations[{n}]", f"unknown location {location_id!r}")
            scope.add(location_id)
        for n, name in enumerate(promo.location_groups):
            _check(
                name in groups,
                f"{path}.location_groups[{n}]",
                f"{name!r} is neither a group of network.groups, a store group's prefix nor a region",
            )
            scope.update(groups[name])
        scopes.append(frozenset(scope))
    return scopes


def build_world(scenario: Scenario) -> World:
    locations = _expand_locations(scenario)
    skus, origin = _expand_skus(scenario)
    stock, stock_skipped = _starting_stock(scenario, locations, skus, origin)
    _validate_references(scenario, locations, skus)
    scopes = _promo_scope(scenario, locations)
    start = scenario.start if scenario.start.tzinfo else scenario.start.replace(tzinfo=UTC)
    return World(
        scenario,
        start.astimezone(UTC),
        locations,
        skus,
        list(scenario.channels),
        stock,
        scopes,
        stock_skipped,
    )


def check_generator(scenario: Scenario) -> None:
    """What generating events needs beyond replaying a log: the demand of at least one channel."""
    _check(
        bool(scenario.demand),
        "$.demand",
        "declares no demand: generating events needs it (or replay a recorded log with --events)",
    )


def parse_scenario(text: str, source: str = "<string>", base: Path | None = None) -> Scenario:
    """Parse and validate a scenario document; raises ScenarioError naming the failing path. The files it
    names are read relative to `base`; without `base` (a document sent over HTTP) it may name none."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError("$", f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ScenarioError("$", f"{source}: expected a mapping at the top level")
    try:
        scenario = msgspec.convert(_stringify_dates(raw), Scenario, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        path = "$"
        if " - at `" in message:
            message, _, rest = message.partition(" - at `")
            path = rest.rstrip("`")
        raise ScenarioError(path, message) from exc
    table = load_inputs(scenario, base)
    if table is not None:
        scenario.__dict__["stock_table"] = table
    build_world(scenario)
    return scenario


def _stringify_dates(value: Any) -> Any:
    # PyYAML turns unquoted timestamps into datetime objects; msgspec wants them as ISO strings or datetimes.
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, int) else k: _stringify_dates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stringify_dates(v) for v in value]
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def load_scenario(path: str | Path) -> Scenario:
    from simulators.plain import ReadError, read_text

    path = Path(path)
    try:
        text = read_text(path)
    except OSError as exc:
        raise ScenarioError("$", f"cannot read {path}: {exc.strerror}") from exc
    except ReadError as exc:
        raise ScenarioError(str(path), str(exc)) from None
    return parse_scenario(text, source=str(path), base=path.parent)
