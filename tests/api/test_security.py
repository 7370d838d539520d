"""API keys and roles: every endpoint but health needs a key carrying the right role."""

from __future__ import annotations

from tests.apiclient import ApiClient


async def test_health_needs_no_key(sqlite_api: ApiClient) -> None:
    assert (await sqlite_api.http.get("/health/live")).json() == {"status": "ok"}
    ready = await sqlite_api.http.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"


async def test_missing_key_is_401_problem(sqlite_api: ApiClient) -> None:
    response = await sqlite_api.http.get("/v1/locations")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "WWW-Authenticate" in response.headers


async def test_unknown_key_is_401(sqlite_api: ApiClient) -> None:
    response = await sqlite_api.http.get("/v1/locations", headers={"X-API-Key": "rp_nope_nope"})
    assert response.status_code == 401


async def test_wrong_role_is_403_naming_the_role(sqlite_api: ApiClient) -> None:
    response = await sqlite_api.as_("planner").put("/v1/locations", json=[])
    assert response.status_code == 403
    assert "'stock'" in response.json()["detail"]


async def test_admin_may_do_everything(sqlite_api: ApiClient) -> None:
    assert (await sqlite_api.as_("admin").put("/v1/locations", json=[])).status_code == 200


async def test_keys_are_stored_hashed(sqlite_api: ApiClient) -> None:
    from sqlalchemy import select

    from service.db.models import ApiKey

    async with sqlite_api.session() as session:
        stored = {row.key_hash for row in (await session.execute(select(ApiKey))).scalars()}
    assert stored and not stored & set(sqlite_api.keys.values())


async def test_malformed_json_is_400_problem(sqlite_api: ApiClient) -> None:
    response = await sqlite_api.as_("stock").put(
        "/v1/locations", content=b"[{", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"


async def test_oversized_body_is_413(sqlite_url: str) -> None:
    from tests.apiclient import api_client, make_settings

    async with api_client(make_settings(sqlite_url, max_body_bytes=1000)) as client:
        response = await client.as_("stock").put(
            "/v1/locations", content=b"[" + b" " * 2000 + b"]", headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_openapi_schema_and_metrics_are_served(sqlite_api: ApiClient) -> None:
    schema = await sqlite_api.http.get("/schema/openapi.json")
    assert schema.status_code == 200 and "/v1/locations" in schema.json()["paths"]
    await sqlite_api.http.get("/health/live")
    await sqlite_api.as_("stock").get("/v1/locations")
    metrics = await sqlite_api.http.get("/metrics")
    assert metrics.status_code == 200 and "retail_policy_requests_total" in metrics.text
