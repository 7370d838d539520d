"""Master data endpoints: upsert by id, list back, refuse bad rows without changing anything."""

from __future__ import annotations

from tests.apiclient import ApiClient

STORE = {"id": "S1", "type": "store", "region": "north", "lat": 53.4, "lon": -2.2, "capabilities": ["pickup"]}
DC = {"id": "DC1", "type": "dc", "region": "north", "lat": 53.5, "lon": -2.3, "daily_capacity": 5000}


async def test_locations_are_upserted_by_id_and_listed(api: ApiClient) -> None:
    stock = api.as_("stock")
    assert (await stock.put("/v1/locations", json=[STORE, DC])).json() == {"upserted": 2}
    assert (await stock.put("/v1/locations", json=[{**STORE, "region": "south"}])).status_code == 200
    listed = (await api.as_("decide").get("/v1/locations")).json()
    assert [(loc["id"], loc["region"]) for loc in listed] == [("DC1", "north"), ("S1", "south")]


async def test_a_bad_row_names_its_field_and_changes_nothing(sqlite_api: ApiClient) -> None:
    stock = sqlite_api.as_("stock")
    response = await stock.put("/v1/locations", json=[STORE, {**DC, "lat": 123}])
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"][0]["field"] == "[1].lat"
    assert (await stock.get("/v1/locations")).json() == []


async def test_duplicate_ids_in_one_request_are_refused(sqlite_api: ApiClient) -> None:
    response = await sqlite_api.as_("stock").put(
        "/v1/items",
        json=[
            {"sku": "A", "category": "c", "price": 2.0, "cost": 1.0},
            {"sku": "A", "category": "c", "price": 3.0, "cost": 1.0},
        ],
    )
    assert response.status_code == 422
    assert response.json()["errors"][0] == {"field": "[1].sku", "reason": "'A' appears twice"}


async def test_promotion_window_must_not_be_empty(sqlite_api: ApiClient) -> None:
    response = await sqlite_api.as_("stock").put(
        "/v1/promotions",
        json=[{"id": "P", "skus": ["A"], "start": "2026-11-27T00:00:00Z", "end": "2026-11-26T00:00:00Z"}],
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "[0].end"


async def test_writing_master_data_is_audited(sqlite_api: ApiClient) -> None:
    from sqlalchemy import select

    from service.db.models import AuditEntry

    await sqlite_api.as_("stock").put("/v1/locations", json=[STORE])
    async with sqlite_api.session() as session:
        rows = (await session.execute(select(AuditEntry))).scalars().all()
    assert [(r.actor, r.action, r.detail) for r in rows] == [("test-stock", "locations.put", {"count": 1})]
