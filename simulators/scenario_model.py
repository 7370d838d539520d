"""The scenario document's types, as read from YAML (`Scenario` and its parts), and the expanded world a
run plays (`World`). `simulators.scenario` parses, validates and expands them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

LocationType = Literal["store", "dc", "dark_store"]
Fulfillment = Literal["ship", "pickup", "ship_from_store"]
ChannelKind = Literal["pos", "online"]
ViewMode = Literal["realtime", "batch"]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ScenarioError(ValueError):
    """A scenario document is malformed or inconsistent; `path` names the failing place."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class Location(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    type: LocationType
    region: str
    lat: float
    lon: float
    ship_from_store: bool = False
    pickup: bool = False
    daily_capacity: int | None = None


class StoreGroup(msgspec.Struct, forbid_unknown_fields=True):
    """`count` stores named `<prefix>-001`... scattered around a centre, deterministic from the seed."""

    prefix: str
    count: int
    region: str
    lat: float
    lon: float
    type: LocationType = "store"
    spread_km: float = 40.0
    ship_from_store_share: float = 0.0
    pickup: bool = True
    daily_capacity: int | None = None


class Network(msgspec.Struct, forbid_unknown_fields=True):
    """`locations_file`: more locations, in the shape of the `PUT /v1/locations` body (CSV or JSON);
    `groups`: named lists of location ids that promotions may name."""

    locations: list[Location] = msgspec.field(default_factory=list)
    store_groups: list[StoreGroup] = msgspec.field(default_factory=list)
    locations_file: str | None = None
    groups: dict[str, list[str]] = msgspec.field(default_factory=dict)


class StockView(msgspec.Struct, forbid_unknown_fields=True):
    """How fresh a channel's stock view is: live (through reservations) or a batch copy every N hours."""

    mode: ViewMode = "realtime"
    sync_every_hours: float | None = None


class Channel(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    kind: ChannelKind
    view: StockView = msgspec.field(default_factory=StockView)
    fulfillment: dict[str, float] = msgspec.field(default_factory=lambda: {"ship": 1.0})
    customer_tiers: dict[str, float] = msgspec.field(default_factory=lambda: {"standard": 1.0})


class Sku(msgspec.Struct, forbid_unknown_fields=True):
    """One SKU, or `count` alike SKUs named `<id>-001`...; `stock` maps a location type or id to units."""

    id: str
    category: str
    price: float
    cost: float
    case_pack: int = 1
    lead_time_days: int = 3
    popularity: float = 1.0
    count: int = 1
    stock: dict[str, int] = msgspec.field(default_factory=dict)


class Demand(msgspec.Struct, forbid_unknown_fields=True):
    """Baseline demand of one channel: orders per hour (online) or sales per store and hour (pos)."""

    channel: str
    rate: float
    hour_of_day: list[float] = msgspec.field(default_factory=lambda: [1.0] * 24)
    day_of_week: dict[str, float] = msgspec.field(default_factory=dict)
    lines: dict[int, float] = msgspec.field(default_factory=lambda: {1: 1.0})
    units: dict[int, float] = msgspec.field(default_factory=lambda: {1: 1.0})


class Promotion(msgspec.Struct, forbid_unknown_fields=True):
    """A promotion of some SKUs or categories in some channels (empty: all) at some locations (empty: the
    whole network) during a window, with a demand uplift for the generator.

    `locations` names location ids, `location_groups` groups: a `network.groups` entry, a store group's
    `prefix` or a region. `curve` is a list of [hours since start, multiplier of the uplift] points,
    linearly interpolated, so that a promotion can peak on its first evening and fade. `uplift` and `curve`
    only shape generated demand: a replayed log needs neither.
    """

    id: str
    start: datetime
    end: datetime
    uplift: float | None = None
    skus: list[str] = msgspec.field(default_factory=list)
    categories: list[str] = msgspec.field(default_factory=list)
    channels: list[str] = msgspec.field(default_factory=list)
    locations: list[str] = msgspec.field(default_factory=list)
    location_groups: list[str] = msgspec.field(default_factory=list)
    curve: list[tuple[float, float]] = msgspec.field(default_factory=list)


class Returns(msgspec.Struct, forbid_unknown_fields=True):
    rate: float = 0.0
    lag_hours: tuple[float, float] = (24.0, 72.0)
    restock_share: float = 0.8
    disposition_after_hours: float = 12.0


class Replenishment(msgspec.Struct, forbid_unknown_fields=True):
    """Reorder reviews through the reorder ruleset; stores are fed by their region's DC, DCs by suppliers."""

    enabled: bool = True
    review_every_hours: float = 24.0
    store_lead_time_hours: float = 24.0
    demand_window_hours: float = 24.0


class Transfers(msgspec.Struct, forbid_unknown_fields=True):
    """Store-to-store rebalancing requests decided by the transfer ruleset."""

    enabled: bool = True
    check_every_hours: float = 6.0
    below_units: int = 1
    qty: int = 2
    transit_hours: float = 6.0
    requested_by: str = "store_manager"


class Approvals(msgspec.Struct, forbid_unknown_fields=True):
    """The approval workflow behind routed transfers: each approver role answers after an exponentially
    distributed time with the given mean (hours); a level that does not answer within the SLA escalates up
    the chain, and past the last level the request expires. Off: routed transfers are only counted."""

    enabled: bool = False
    mean_response_hours: dict[str, float] = msgspec.field(default_factory=dict)
    default_mean_response_hours: float = 8.0


class Markdowns(msgspec.Struct, forbid_unknown_fields=True):
    """Markdown proposals on slow SKUs, decided by the markdown ruleset at the given hours."""

    enabled: bool = True
    at_hours: list[float] = msgspec.field(default_factory=list)
    depth: float = 0.3
    min_weeks_of_supply: float = 8.0
    season_days_to_end: int = 30
    requested_by: str = "merchandiser"


class Inbound(msgspec.Struct, forbid_unknown_fields=True):
    """A scheduled receipt at a location (a supplier delivery known in advance)."""

    at_hours: float
    location: str
    sku: str
    qty: int


class SkuInfo(msgspec.Struct, frozen=True):
    id: str
    category: str
    price: float
    cost: float
    case_pack: int
    lead_time_days: int
    popularity: float
