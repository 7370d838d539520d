"""A scenario's own network, items and stock from CSV and JSON files in the API's shapes, per-location
promotions, and the fields a replay does not need."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulators.events import Sale
from simulators.generator import generate_events, promo_active
from simulators.scenario import ScenarioError, World, load_scenario, parse_scenario

LOCATIONS = [
    {"id": "DC-1", "type": "dc", "region": "north", "lat": 52.4, "lon": 13.1, "capabilities": ["ship"]},
    {"id": "N-01", "type": "store", "region": "north", "lat": 52.5, "lon": 13.4,
     "capabilities": ["pickup", "ship_from_store"], "daily_capacity": 40},
    {"id": "N-02", "type": "store", "region": "north", "lat": 52.6, "lon": 13.3, "capabilities": ["pickup"]},
    {"id": "S-01", "type": "store", "region": "south", "lat": 52.3, "lon": 13.5},
]  # fmt: skip
ITEMS = [
    {"sku": "HP-100", "category": "audio", "price": 79.0, "cost": 38.0, "case_pack": 4, "lead_time_days": 5},
    {"sku": "MUG-1", "category": "kitchen", "price": 7.5, "cost": 2.0},
]
STOCK = [
    {"sku": "HP-100", "location": "DC-1", "sellable": 60, "in_transit": 4},
    {"sku": "HP-100", "location": "N-01", "sellable": 3},
    {"sku": "MUG-1", "location": "S-01", "sellable": 6, "damaged": 1},
]
SCENARIO = """
name: own-data
start: 2026-11-20T00:00:00Z
duration_hours: 24
network:
  locations_file: {locations}
items_file: {items}
stock_file: {stock}
channels: [{{id: store_pos, kind: pos}}, {{id: ecommerce, kind: online}}]
"""


def _csv(rows: list[dict[str, object]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]

    def cell(value: object) -> str:
        return ";".join(map(str, value)) if isinstance(value, list) else str(value)

    body = [",".join(cell(row[c]) if c in row else "" for c in columns) for row in rows]
    return "\n".join([",".join(columns), *body]) + "\n"


def _scenario(tmp_path: Path, kind: str, extra: str = "", **files: str) -> Path:
    def text(rows: list[dict[str, object]]) -> str:
        if kind == "jsonl":
            return "".join(json.dumps(row) + "\n" for row in rows)
        return _csv(rows) if kind == "csv" else json.dumps(rows, indent=1)

    contents = {"locations": text(LOCATIONS), "items": text(ITEMS), "stock": text(STOCK)}
    names = {}
    for name, text in contents.items():
        names[name] = f"data/{name}.{kind}"
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / names[name]).write_bytes(files.get(name, text).encode("utf-8", "surrogateescape"))
    path = tmp_path / "scenario.yaml"
    path.write_text(SCENARIO.format(**names) + extra)
    return path


def _world(path: Path) -> World:
    return load_scenario(path).build()


@pytest.mark.parametrize("kind", ["csv", "json", "jsonl"])
def test_locations_items_and_stock_come_from_files(tmp_path: Path, kind: str) -> None:
    world = _world(_scenario(tmp_path, kind))
    assert [loc.id for loc in world.locations] == ["DC-1", "N-01", "N-02", "S-01"]
    n01 = world.location("N-01")
    assert (n01.pickup, n01.ship_from_store, n01.daily_capacity) == (True, True, 40)
    assert (world.location("S-01").pickup, world.location("DC-1").type) == (False, "dc")
    assert [(s.id, s.price, s.case_pack, s.lead_time_days) for s in world.skus] == [
        ("HP-100", 79.0, 4, 5),
        ("MUG-1", 7.5, 1, 7),  # the API's defaults
    ]
    # sellable is the starting stock; what is damaged or in transit is not
    assert world.starting_stock["HP-100"] == {"DC-1": 60, "N-01": 3, "N-02": 0, "S-01": 0}
    assert world.starting_stock["MUG-1"] == {"DC-1": 0, "N-01": 0, "N-02": 0, "S-01": 6}


def test_csv_and_json_give_the_same_world(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    csv_world = _world(_scenario(tmp_path / "a", "csv"))
    json_world = _world(_scenario(tmp_path / "b", "json"))
    assert csv_world.locations == json_world.locations
    assert csv_world.skus == json_world.skus
    assert csv_world.starting_stock == json_world.starting_stock


def test_a_stock_export_snapshot_is_starting_stock(tmp_path: Path) -> None:
    snapshot = {"exported_at": "2026-11-19T22:00:00Z", "backend": "sql", "rows": STOCK}
    path = _scenario(tmp_path, "json", stock=json.dumps(snapshot))
    assert _world(path).starting_stock["HP-100"]["DC-1"] == 60


def test_stock_rows_outside_the_scenario_are_counted(tmp_path: Path) -> None:
    rows = [
        *STOCK,
        {"sku": "GONE", "location": "DC-1", "sellable": 1},
        {"sku": "MUG-1", "location": "X", "sellable": 2},
    ]
    world = _world(_scenario(tmp_path, "json", stock=json.dumps(rows)))
    assert world.stock_skipped == {"unknown_sku": 1, "unknown_location": 1}


def test_a_file_stock_row_wins_over_the_yaml_stock_by_type(tmp_path: Path) -> None:
    extra = "skus: [{id: TEE, category: apparel, price: 20, cost: 8, stock: {store: 5}}]\n"
    rows = [*STOCK, {"sku": "TEE", "location": "N-02", "sellable": 9}]
    world = _world(_scenario(tmp_path, "json", extra, stock=json.dumps(rows)))
    assert world.starting_stock["TEE"] == {"DC-1": 0, "N-01": 5, "N-02": 9, "S-01": 5}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("items", "sku,category,price,cost\nHP-100,audio,79,38\nMUG-1,kitchen,x,2\n",
         'data/items.csv: line 3, price: expected a number, got "x"'),
        ("items", "sku,category,price,cost\nHP-100,audio,0,0\n",
         "data/items.csv: line 2, price: must be above 0, got 0.0"),
        ("items", "sku,category,price,cost,colour\nHP-100,audio,79,38,red\n",
         "data/items.csv: line 1, colour: not a known column; the columns are sku, category, price, cost, "
         "case_pack, supplier, lead_time_days, season_end"),
        ("items", "sku,category,price\nHP-100,audio,79\n", "data/items.csv: line 2, cost: missing"),
        ("locations", "id,type,region,lat,lon\nDC-1,warehouse,north,52,13\n",
         'data/locations.csv: line 2, type: the simulator knows store, dc, dark_store, got "warehouse"'),
        ("locations", "id,type,region,lat,lon\nDC-1,dc,north,152,13\n",
         'data/locations.csv: line 2, lat: must be at most 90, got "152"'),
        ("locations", "id,type,region,lat,lon,capabilities\nN 1,store,north,52,13,\n",
         "data/locations.csv: line 2, id: expected letters, digits, '.', '_', ':' and '-' only, got \"N 1\""),
        ("locations", "id,type,region,lat,lon,capabilities\nN-1,store,north,52,13,pickup;fly\n",
         'data/locations.csv: line 2, capabilities[1]: expected one of ship_from_store, pickup, ship, '
         'receive_transfers, got "fly"'),
        ("locations", "id,type,region,lat,lon\nN-1,store,north,52,13\nN-1,store,north,52,13\n",
         'data/locations.csv: line 3, id: "N-1" appears twice (also on line 2)'),
        ("stock", "sku,location,sellable\nHP-100,DC-1,two\n",
         'data/stock.csv: line 2, sellable: expected an integer, got "two"'),
        ("stock", "sku,location,sellable\nHP-100,DC-1,-4\n",
         'data/stock.csv: line 2, sellable: must be 0 or more, got "-4"'),
        ("stock", "sku,location,sellable\nHP-100,DC-1,4\nHP-100,DC-1,5\n",
         "data/stock.csv: line 3: HP-100 at DC-1 appears twice (also on line 2)"),
        ("stock", "sku,location,sellable\nHP-100,DC-1,4\nMUG-1,N-\xe9,5\n",
         "data/stock.csv: line 3: not UTF-8 text (byte 0xe9 at byte 9 of the line); save the file as UTF-8"),
    ],
)  # fmt: skip
def test_a_bad_csv_line_is_named_in_plain_words(tmp_path: Path, name: str, text: str, message: str) -> None:
    raw = text.encode("latin-1").decode("utf-8", "surrogateescape")  # \xe9 stays the one byte it is
    path = _scenario(tmp_path, "csv", **{name: raw})
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    assert str(error.value) == message


def test_a_bad_json_entry_is_named_by_its_line(tmp_path: Path) -> None:
    items = json.dumps([ITEMS[0], {**ITEMS[1], "price": "cheap"}], indent=2)
    path = _scenario(tmp_path, "json", items=items)
    line = [n for n, text in enumerate(items.splitlines(), 1) if text.strip() == "{"][1]
    with pytest.raises(
        ScenarioError, match=rf'^data/items.json: line {line}, price: expected a number, got "cheap"$'
    ):
        load_scenario(path)


def test_json_that_does_not_parse_names_its_line(tmp_path: Path) -> None:
    path = _scenario(
        tmp_path, "json", stock='[\n{"sku": "HP-100", "location": "DC-1", "sellable": 1},\n{"sku": }\n]'
    )
    with pytest.raises(ScenarioError, match=r"^data/stock.json: line 3: not valid JSON"):
        load_scenario(path)


def test_a_document_without_a_file_names_no_files() -> None:
    text = SCENARIO.format(locations="l.csv", items="i.csv", stock="s.csv")
    with pytest.raises(ScenarioError) as error:
        parse_scenario(text, source="scenario_yaml")
    assert error.value.path == "$.network.locations_file"
    assert "cannot name files" in error.value.message


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = _scenario(tmp_path, "csv")
    (tmp_path / "data" / "items.csv").unlink()
    with pytest.raises(ScenarioError, match=r"^\$\.items_file: cannot read data/items.csv"):
        load_scenario(path)


# ---------------------------------------------------------------------------------------------------------
# Promotions at some stores or location groups

PROMO = """
network:
  locations:
    - {id: DC-1, type: dc, region: north, lat: 52.4, lon: 13.1}
    - {id: X-1, type: store, region: east, lat: 52.5, lon: 13.9}
  store_groups:
    - {prefix: N, count: 4, region: north, lat: 52.55, lon: 13.30, spread_km: 10}
    - {prefix: S, count: 4, region: south, lat: 52.30, lon: 13.50, spread_km: 10}
  groups: {flagships: [N-001, S-001]}
channels: [{id: store_pos, kind: pos}, {id: web, kind: online}]
skus:
  - {id: HP, category: audio, price: 79, cost: 38, stock: {store: 50}}
  - {id: MUG, category: kitchen, price: 8, cost: 2, stock: {store: 50}}
demand: [{channel: store_pos, rate: 2}, {channel: web, rate: 20}]
"""


def _promo_world(promotion: str) -> World:
    text = (
        "name: p\nstart: 2026-11-20T00:00:00Z\nduration_hours: 48\nseed: 3\n"
        + PROMO
        + "promotions:\n  - {id: p, start: 2026-11-20T00:00:00Z, end: 2026-11-22T00:00:00Z, skus: [HP], "
        + promotion
        + "}\n"
    )
    return parse_scenario(text).build()


def test_a_promotion_names_stores_and_groups() -> None:
    world = _promo_world("uplift: 4, locations: [X-1], location_groups: [flagships, S]")
    assert world.promo_scope == [frozenset({"X-1", "N-001", "S-001", "S-002", "S-003", "S-004"})]
    assert _promo_world("uplift: 4, location_groups: [north]").promo_scope == [
        frozenset({"DC-1", "N-001", "N-002", "N-003", "N-004"})
    ]
    hp = world.skus[0]
    assert promo_active(world, hp, "store_pos", 1.0, "S-002")
    assert not promo_active(world, hp, "store_pos", 1.0, "N-002")
    assert promo_active(world, hp, "store_pos", 1.0)  # anywhere: as the allocation reads the calendar


@pytest.mark.parametrize(
    ("promotion", "path"),
    [("uplift: 2, locations: [N-999]", "$.promotions[0].locations[0]"),
     ("uplift: 2, location_groups: [west]", "$.promotions[0].location_groups[0]")],
)  # fmt: skip
def test_an_unknown_promotion_location_is_refused(promotion: str, path: str) -> None:
    with pytest.raises(ScenarioError) as error:
        _promo_world(promotion)
    assert error.value.path == path


def test_a_store_promotion_lifts_only_those_stores() -> None:
    world = _promo_world("uplift: 6, location_groups: [S]")
    events = generate_events(world)
    hp_sales: dict[str, int] = {}
    for event in events:
        if isinstance(event, Sale) and event.sku == "HP":
            prefix = event.store.split("-")[0]
            hp_sales[prefix] = hp_sales.get(prefix, 0) + event.qty
    assert hp_sales["S"] > 2.5 * hp_sales["N"]
    # without the scope, the same promotion lifts every store alike
    everywhere = generate_events(_promo_world("uplift: 6"))
    north = sum(e.qty for e in everywhere if isinstance(e, Sale) and e.sku == "HP" and e.store[0] == "N")
    assert north > 2.5 * hp_sales["N"]


# ---------------------------------------------------------------------------------------------------------
# What a replay does not need


def test_a_replay_scenario_needs_no_demand_and_no_uplift(tmp_path: Path) -> None:
    extra = (
        "promotions:\n  - {id: p, start: 2026-11-20T06:00:00Z, end: 2026-11-20T12:00:00Z, skus: [HP-100]}\n"
    )
    world = _world(_scenario(tmp_path, "csv", extra))
    assert world.scenario.demand == [] and world.scenario.promotions[0].uplift is None
    assert promo_active(world, world.skus[0], "store_pos", 7.0)
    with pytest.raises(ScenarioError) as error:
        generate_events(world)
    assert error.value.path == "$.demand"


def test_a_scenario_that_is_not_utf8_is_named_by_its_line(tmp_path: Path) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_bytes(b"name: caf\xe9\nstart: 2026-11-20T00:00:00Z\n")
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    assert str(error.value) == (
        f"{path}: line 1: not UTF-8 text (byte 0xe9 at byte 10 of the line); save the file as UTF-8"
    )
