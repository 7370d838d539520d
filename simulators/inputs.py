"""A planner's own network, catalogue and starting stock, read from files in the shapes of the API's bodies.

A scenario's `network.locations_file`, `items_file` and `stock_file` name files (relative to the scenario
file) holding what `PUT /v1/locations`, `PUT /v1/items` and `PUT /v1/stock` take, decoded with the API's
own schemas (`LocationIn`, `ItemIn`, `SnapshotRowIn`):

- CSV (`.csv`): a header naming the fields, one row per entry; an empty cell leaves the field out (its
  default applies); a list field (`capabilities`) holds its values separated by `;` or spaces;
- JSON (`.json`): the request body, a JSON array of objects; for stock also the object that
  `retail-policy stock export` writes (`{"exported_at": ..., "backend": ..., "rows": [...]}`);
- JSON Lines (`.jsonl`): one object per line.

Every error names the file, the line and the field, e.g. `items.csv: line 7, price: expected a number,
got "x"`. Locations are added to `network.locations`, items to `skus`; the stock rows' `sellable` units are
the starting stock of their SKU and location (they win over a SKU's `stock` by type or id).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec

from simulators.plain import ReadError, csv_records, explain, json_records, shown
from simulators.scenario_model import Location, Network, ScenarioError, Sku

if TYPE_CHECKING:
    from service.api.inputs import ItemIn, LocationIn, SnapshotRowIn

T = TypeVar("T")
LOCATION_TYPES = ("store", "dc", "dark_store")
SNAPSHOT_KEYS = ("exported_at", "backend")
_CHOICES = {"capabilities": ("ship_from_store", "pickup", "ship", "receive_transfers")}
_LIST_SPLIT = re.compile(r"[;\s]+")


class Named(Protocol):
    """What of a scenario document its files add to: its network and SKUs."""

    network: Network
    items_file: str | None
    stock_file: str | None
    skus: list[Sku]


def load_inputs(scenario: Named, base: Path | None) -> dict[str, dict[str, int]] | None:
    """Read the locations and items files `scenario` names (relative to `base`) into it, and return the
    starting stock of its stock file (None without one); a document without a directory of its own
    (`base` None, e.g. one sent over HTTP) may name none."""
    refs = [
        ("$.network.locations_file", scenario.network.locations_file),
        ("$.items_file", scenario.items_file),
        ("$.stock_file", scenario.stock_file),
    ]
    named = [(path, ref) for path, ref in refs if ref is not None]
    if not named:
        return None
    if base is None:
        path = named[0][0]
        raise ScenarioError(path, "a scenario sent without a file of its own cannot name files")
    from service.api.inputs import ItemIn, LocationIn, SnapshotRowIn

    if scenario.network.locations_file is not None:
        ref = scenario.network.locations_file
        rows = _rows(base / ref, ref, "$.network.locations_file", LocationIn)
        _add_locations(scenario, ref, rows)
    if scenario.items_file is not None:
        ref = scenario.items_file
        _add_items(scenario, ref, _rows(base / ref, ref, "$.items_file", ItemIn))
    if scenario.stock_file is not None:
        ref = scenario.stock_file
        return _stock(ref, _rows(base / ref, ref, "$.stock_file", SnapshotRowIn))
    return None


def _rows(path: Path, ref: str, field: str, schema: type[T]) -> list[tuple[int, T]]:
    """(line, entry) of a CSV, JSON or JSON Lines file of `schema` entries."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json", ".jsonl"):
        raise ScenarioError(field, f"{ref}: expected a .csv, .json or .jsonl file")
    fields: Sequence[str] = getattr(schema, "__struct_fields__", ())
    try:
        records: Iterable[tuple[int, Any]]
        if suffix == ".csv":
            lists = [name for name in fields if name == "capabilities"]
            records = (
                (n, {k: _LIST_SPLIT.split(v) if k in lists else v for k, v in row.items()})
                for n, row in csv_records(path, fields)
            )
        else:
            records = json_records(path, "rows", SNAPSHOT_KEYS)
        out: list[tuple[int, T]] = []
        for number, record in records:
            if not isinstance(record, dict):
                raise ReadError(number, "", f"expected an object with the fields {', '.join(fields)}")
            try:
                out.append((number, msgspec.convert(record, schema, strict=suffix != ".csv")))
            except msgspec.ValidationError as exc:
                name, reason = explain(exc, record, _CHOICES)
                raise ReadError(number, name, reason) from None
        return out
    except ReadError as exc:
        raise ScenarioError(ref, str(exc)) from None
    except OSError as exc:
        raise ScenarioError(field, f"cannot read {ref}: {exc.strerror}") from None


def _duplicate(ref: str, line: int, field: str, value: str, first: int | None) -> ScenarioError:
    where = f"line {first}" if first else "the scenario"
    return ScenarioError(ref, f"line {line}, {field}: {shown(value)} appears twice (also on {where})")


def _add_locations(scenario: Named, ref: str, rows: list[tuple[int, LocationIn]]) -> None:
    network = scenario.network
    seen: dict[str, int | None] = {location.id: None for location in network.locations}
    for group in network.store_groups:
        seen.update({f"{group.prefix}-{n + 1:03d}": None for n in range(group.count)})
    for line, row in rows:
        if row.id in seen:
            raise _duplicate(ref, line, "id", row.id, seen[row.id])
        seen[row.id] = line
        if row.type not in LOCATION_TYPES:
            reason = f"the simulator knows {', '.join(LOCATION_TYPES)}, got {shown(row.type)}"
            raise ScenarioError(ref, f"line {line}, type: {reason}")
        network.locations.append(
            Location(
                id=row.id,
                type=row.type,  # type: ignore[arg-type]  # checked above
                region=row.region,
                lat=row.lat,
                lon=row.lon,
                ship_from_store="ship_from_store" in row.capabilities,
                pickup="pickup" in row.capabilities,
                daily_capacity=row.daily_capacity,
            )
        )


def _add_items(scenario: Named, ref: str, rows: list[tuple[int, ItemIn]]) -> None:
    seen: dict[str, int | None] = {}
    for sku in scenario.skus:
        ids = [sku.id] if sku.count == 1 else [f"{sku.id}-{n + 1:03d}" for n in range(sku.count)]
        seen.update({sku_id: None for sku_id in ids})
    for line, row in rows:
        if row.sku in seen:
            raise _duplicate(ref, line, "sku", row.sku, seen[row.sku])
        seen[row.sku] = line
        if row.price <= 0:
            raise ScenarioError(ref, f"line {line}, price: must be above 0, got {shown(row.price)}")
        scenario.skus.append(
            Sku(
                id=row.sku,
                category=row.category,
                price=row.price,
                cost=row.cost,
                case_pack=row.case_pack,
                lead_time_days=row.lead_time_days,
            )
        )


def _stock(ref: str, rows: list[tuple[int, SnapshotRowIn]]) -> dict[str, dict[str, int]]:
    """sku -> location -> sellable units; the other buckets of a snapshot row are not starting stock."""
    table: dict[str, dict[str, int]] = {}
    lines: dict[tuple[str, str], int] = {}
    for line, row in rows:
        key = (row.sku, row.location)
        if key in lines:
            raise ScenarioError(
                ref, f"line {line}: {row.sku} at {row.location} appears twice (also on line {lines[key]})"
            )
        lines[key] = line
        table.setdefault(row.sku, {})[row.location] = row.sellable
    return table
