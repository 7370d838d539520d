"""API key lifecycle under /v1/keys: list, create, revoke, rotate, expiry, and revocation on every worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from service.db.models import AuditEntry
from tests.apiclient import ApiClient, api_client, make_settings

LISTED = {"id", "name", "roles", "created_at", "expires_at", "revoked_at"}


def key_id(key: str) -> str:
    return key.split("_")[1]


def problem_fields(response: Any) -> list[str]:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return [error["field"] for error in response.json().get("errors", [])]


async def audit_rows(api: ApiClient, action: str) -> list[AuditEntry]:
    async with api.session() as session:
        return list((await session.execute(select(AuditEntry).where(AuditEntry.action == action))).scalars())


class ControlledClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_listing_shows_every_key_and_no_secret(sqlite_api: ApiClient) -> None:
    response = await sqlite_api.as_("admin").get("/v1/keys")
    assert response.status_code == 200
    listed = response.json()
    assert {row["name"] for row in listed} >= {"test-admin", "test-decide"}
    assert all(set(row) == LISTED for row in listed)
    # a key is rp_<id>_<secret>, and the secret may itself hold "_": look for the whole secret
    assert not any(
        key in response.text or key.split("_", 2)[2] in response.text for key in sqlite_api.keys.values()
    )


async def test_a_created_key_is_shown_once_and_works_with_its_roles(sqlite_api: ApiClient) -> None:
    created = await sqlite_api.as_("admin").post("/v1/keys", json={"name": "web-shop", "roles": ["decide"]})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["key"].startswith(f"rp_{body['id']}_") and body["roles"] == ["decide"]
    headers = {"Authorization": f"Bearer {body['key']}"}
    assert (await sqlite_api.http.get("/v1/locations", headers=headers)).status_code == 200
    assert (await sqlite_api.http.put("/v1/locations", json=[], headers=headers)).status_code == 403
    listing = await sqlite_api.as_("admin").get("/v1/keys")
    assert body["key"] not in listing.text
    [row] = [
        r for r in await audit_rows(sqlite_api, "api_key.create") if r.subject == f"api_key:{body['id']}"
    ]
    assert row.actor == "test-admin" and row.detail["roles"] == ["decide"]


async def test_only_admins_manage_keys(sqlite_api: ApiClient) -> None:
    for role in ("decide", "stock", "publisher"):
        assert (await sqlite_api.as_(role).get("/v1/keys")).status_code == 403
        refused = await sqlite_api.as_(role).post("/v1/keys", json={"name": "x", "roles": ["admin"]})
        assert refused.status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"roles": ["decide"]}, "name"),
        ({"name": "has space", "roles": ["decide"]}, "name"),
        ({"name": "ok", "roles": ["decide", "owner"]}, "roles"),
        ({"name": "ok", "roles": []}, "roles"),
        ({"name": "ok", "roles": ["decide"], "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "ok", "roles": ["decide"], "expires_at": "2099-01-01T00:00:00"}, "expires_at"),
        ({"name": "ok", "roles": ["decide"], "secret": "mine"}, "secret"),
    ],
)
async def test_bad_input_names_the_field_and_creates_nothing(
    sqlite_api: ApiClient, body: dict[str, Any], field: str
) -> None:
    before = (await sqlite_api.as_("admin").get("/v1/keys")).json()
    response = await sqlite_api.as_("admin").post("/v1/keys", json=body)
    assert response.status_code == 422
    assert problem_fields(response) == [field]
    assert (await sqlite_api.as_("admin").get("/v1/keys")).json() == before


@pytest.mark.parametrize("action", ["revoke", "rotate"])
async def test_an_unknown_key_is_404(sqlite_api: ApiClient, action: str) -> None:
    response = await sqlite_api.as_("admin").post(f"/v1/keys/no-such-key/{action}")
    assert response.status_code == 404
    assert problem_fields(response) == ["name_or_id"]


async def test_a_revoked_key_is_refused_at_once_on_the_worker_that_revoked_it(sqlite_api: ApiClient) -> None:
    stock = sqlite_api.as_("stock")
    assert (await stock.get("/v1/locations")).status_code == 200  # cached now
    revoked = await sqlite_api.as_("admin").post(f"/v1/keys/{key_id(sqlite_api.keys['stock'])}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert (await stock.get("/v1/locations")).status_code == 401
    [row] = await audit_rows(sqlite_api, "api_key.revoke")
    assert row.actor == "test-admin" and row.detail == {"name": "test-stock"}
    again = await sqlite_api.as_("admin").post(f"/v1/keys/{key_id(sqlite_api.keys['stock'])}/revoke")
    assert again.status_code == 409


async def test_a_key_can_be_revoked_by_its_name(sqlite_api: ApiClient) -> None:
    assert (await sqlite_api.as_("admin").post("/v1/keys/test-planner/revoke")).status_code == 200
    assert (await sqlite_api.as_("planner").get("/v1/locations")).status_code == 401


async def test_a_name_shared_by_two_active_keys_is_ambiguous(sqlite_api: ApiClient) -> None:
    admin = sqlite_api.as_("admin")
    for _ in range(2):
        await admin.post("/v1/keys", json={"name": "twin", "roles": ["decide"]})
    response = await admin.post("/v1/keys/twin/revoke")
    assert response.status_code == 409 and problem_fields(response) == ["name_or_id"]


async def test_rotation_issues_a_new_secret_with_the_same_roles_and_revokes_the_old(
    sqlite_api: ApiClient,
) -> None:
    old = sqlite_api.keys["publisher"]
    rotated = await sqlite_api.as_("admin").post("/v1/keys/test-publisher/rotate")
    assert rotated.status_code == 201, rotated.text
    body = rotated.json()
    assert body["name"] == "test-publisher" and body["roles"] == ["publisher"]
    assert body["replaces"] == key_id(old) and body["key"] != old
    assert (await sqlite_api.http.get("/v1/rulesets", headers={"X-API-Key": old})).status_code == 401
    assert (await sqlite_api.http.get("/v1/rulesets", headers={"X-API-Key": body["key"]})).status_code == 200
    [row] = await audit_rows(sqlite_api, "api_key.rotate")
    assert row.actor == "test-admin" and row.detail["replaced_by"] == body["id"]


async def test_the_last_active_admin_key_cannot_be_revoked(sqlite_api: ApiClient) -> None:
    admin = sqlite_api.as_("admin")
    refused = await admin.post("/v1/keys/test-admin/revoke")
    assert refused.status_code == 409 and problem_fields(refused) == ["name_or_id"]
    assert (await admin.get("/v1/keys")).status_code == 200
    # rotating is allowed: the new admin key exists before the old one goes
    rotated = (await admin.post("/v1/keys/test-admin/rotate")).json()
    second = await sqlite_api.http.post(
        "/v1/keys", json={"name": "ops", "roles": ["admin"]}, headers={"X-API-Key": rotated["key"]}
    )
    assert second.status_code == 201
    revoked = await sqlite_api.http.post(
        f"/v1/keys/{rotated['id']}/revoke", headers={"X-API-Key": second.json()["key"]}
    )
    assert revoked.status_code == 200


async def test_an_expired_key_is_401(sqlite_api: ApiClient) -> None:
    expires = datetime.now(UTC) + timedelta(hours=1)
    created = await sqlite_api.as_("admin").post(
        "/v1/keys", json={"name": "temp", "roles": ["stock"], "expires_at": expires.isoformat()}
    )
    assert created.json()["expires_at"] is not None
    headers = {"X-API-Key": created.json()["key"]}
    assert (await sqlite_api.http.get("/v1/locations", headers=headers)).status_code == 200
    sqlite_api.services.principals.now = lambda: expires + timedelta(seconds=1)
    refused = await sqlite_api.http.get("/v1/locations", headers=headers)
    assert refused.status_code == 401 and "expired" in refused.json()["detail"]


async def test_a_revocation_reaches_another_worker_on_the_same_database_within_a_second(
    sqlite_url: str,
) -> None:
    settings = make_settings(sqlite_url)
    async with api_client(settings) as first, api_client(settings) as second:
        clock = ControlledClock()
        second.services.principals.clock = clock
        victim = first.keys["decide"]
        headers = {"X-API-Key": victim}
        assert (
            await second.http.get("/v1/locations", headers=headers)
        ).status_code == 200  # second caches it
        assert (await first.as_("admin").post(f"/v1/keys/{key_id(victim)}/revoke")).status_code == 200
        clock.now += 1.0  # the promise: refused everywhere one second after the revocation
        assert (await second.http.get("/v1/locations", headers=headers)).status_code == 401


async def test_the_lifecycle_holds_on_both_databases(api: ApiClient) -> None:
    admin = api.as_("admin")
    created = (await admin.post("/v1/keys", json={"name": "pos", "roles": ["decide", "stock"]})).json()
    rotated = (
        await admin.post("/v1/keys/pos/rotate", json={"expires_at": "2099-01-01T00:00:00+01:00"})
    ).json()
    assert rotated["roles"] == ["decide", "stock"] and rotated["expires_at"] == "2098-12-31T23:00:00Z"
    assert (await admin.post(f"/v1/keys/{created['id']}/revoke")).status_code == 409  # already revoked
    assert (await admin.post("/v1/keys/test-admin/revoke")).status_code == 409  # the last admin key
    listed = {row["id"]: row for row in (await admin.get("/v1/keys")).json()}
    assert listed[created["id"]]["revoked_at"] is not None and listed[rotated["id"]]["revoked_at"] is None


async def test_a_lookup_that_read_the_key_before_its_revocation_caches_nothing(
    request: pytest.FixtureRequest,
) -> None:
    import asyncio
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager
    from types import SimpleNamespace

    from sqlalchemy.ext.asyncio import AsyncSession

    from service.db.engine import create_engine, session_factory
    from service.security.guards import PrincipalCache
    from service.security.keys import create_key, revoke_key
    from service.settings import DatabaseSettings
    from tests.conftest import migrated_database

    engine = create_engine(DatabaseSettings(url=await migrated_database("sqlite", request)))
    sessions = session_factory(engine)
    read, resume = asyncio.Event(), asyncio.Event()

    @asynccontextmanager
    async def gated_session() -> AsyncIterator[AsyncSession]:
        """A real session; the lookup using it stops after its query until the test lets it go on."""
        async with sessions() as session:
            yield session
        read.set()
        await resume.wait()

    try:
        key = await create_key(sessions, "caller", ["stock"])
        cache = PrincipalCache()
        services = SimpleNamespace(sessions=gated_session)
        early = asyncio.ensure_future(cache.principal(services, key))
        await read.wait()  # the lookup has read the key while it was still valid
        await revoke_key(sessions, key_id(key))
        cache.forget(key_id(key))  # what the revoking worker does
        resume.set()
        assert (await early) is not None  # that request arrived before the revocation
        assert await cache.principal(services, key) is None
    finally:
        await engine.dispose()
