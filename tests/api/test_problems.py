"""Problem answers name no host, port, path or driver message, and carry a correlation id found in the log."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.apiclient import ApiClient, api_client, make_settings
from tests.services import free_port

LEAKS = (
    "127.0.0.1",
    "localhost",
    "Errno",
    "errno",
    "Connection refused",
    "Traceback",
    ".py",
    "SELECT",
    "sqlite",
)


def assert_reveals_nothing(response: Any, *also: str) -> str:
    """The problem's correlation id, after checking the body names nothing internal."""
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    for leak in (*LEAKS, *also):
        assert leak not in response.text, f"{leak!r} in {response.text}"
    correlation_id: str = response.json()["correlation_id"]
    assert response.headers["X-Correlation-ID"] == correlation_id
    return correlation_id


@pytest.fixture
async def redis_away_api(sqlite_url: str) -> AsyncIterator[tuple[ApiClient, int]]:
    """The app with its stock in a Redis at a loopback port where nothing listens (and that port)."""
    port = free_port()
    async with api_client(make_settings(sqlite_url, "redis", f"redis://127.0.0.1:{port}/0")) as api:
        yield api, port


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/stock/SKU-1", None),
        ("POST", "/v1/decisions/availability", {"channel": "ecommerce", "skus": ["SKU-1"]}),
        (
            "POST",
            "/v1/reservations",
            {
                "order_id": "o-1",
                "channel": "web",
                "idempotency_key": "k-1",
                "lines": [{"sku": "SKU-1", "location": "S1", "qty": 1}],
            },
        ),
    ],
)
async def test_redis_unreachable_answers_503_naming_no_address_with_a_logged_correlation_id(
    redis_away_api: tuple[ApiClient, int],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    body: Any,
) -> None:
    api, port = redis_away_api
    item = {"sku": "SKU-1", "category": "apparel", "price": 10.0, "cost": 4.0}
    location = {
        "id": "S1",
        "type": "store",
        "region": "north",
        "lat": 53.4,
        "lon": -2.2,
        "capabilities": ["ship"],
    }
    assert (await api.as_("stock").put("/v1/items", json=[item])).status_code == 200
    assert (await api.as_("stock").put("/v1/locations", json=[location])).status_code == 200
    with caplog.at_level(logging.WARNING):
        response = await api.http.request(method, path, json=body, headers=api.headers("admin"))
    assert response.status_code == 503 and response.headers["Retry-After"]
    correlation_id = assert_reveals_nothing(response, str(port), str(tmp_path))
    assert re.fullmatch(r"[0-9a-f]{16}", correlation_id)
    logged = [record for record in caplog.records if correlation_id in record.getMessage()]
    assert logged, "the correlation id is not in the log"
    assert str(port) in logged[0].getMessage()  # the operator sees what the client does not


async def test_database_unreachable_answers_503_naming_no_path(
    sqlite_api: ApiClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with sqlite_api.services.engine.begin() as conn:
        await conn.exec_driver_sql("ALTER TABLE api_keys RENAME TO api_keys_away")
    try:
        with caplog.at_level(logging.WARNING):
            response = await sqlite_api.as_("planner").get("/v1/locations")  # an uncached key: a lookup
    finally:
        async with sqlite_api.services.engine.begin() as conn:
            await conn.exec_driver_sql("ALTER TABLE api_keys_away RENAME TO api_keys")
    assert response.status_code == 503
    correlation_id = assert_reveals_nothing(response, str(tmp_path), "api_keys")
    assert any(correlation_id in record.getMessage() for record in caplog.records)


async def test_a_busy_sqlite_file_answers_503_with_retry_after_naming_nothing(
    sqlite_api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The SQLite writer raises the driver's own error (not SQLAlchemy's) when the write lock stays taken
    past its timeout: the caller may retry, as for any database that cannot be reached."""
    import sqlite3

    from litestar import post

    from service.security import requires

    @post("/v1/busy-write", opt=requires("planner"), sync_to_thread=False)
    def locked() -> None:
        raise sqlite3.OperationalError("database is locked: /srv/var/retail-policy.db")

    sqlite_api.http.app.register(locked)
    with caplog.at_level(logging.WARNING):
        response = await sqlite_api.as_("planner").post("/v1/busy-write")
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    correlation_id = assert_reveals_nothing(response, "/srv/var", "is locked")
    assert any(correlation_id in record.getMessage() for record in caplog.records)
    metrics = (await sqlite_api.as_("admin").get("/metrics")).text
    assert [line for line in metrics.splitlines() if "/v1/busy-write" in line and 'status_code="503"' in line]


async def test_a_safe_incoming_request_id_becomes_the_correlation_id(sqlite_api: ApiClient) -> None:
    for header in ("X-Request-ID", "X-Correlation-ID"):
        response = await sqlite_api.http.get("/v1/locations", headers={header: "edge-7f3a.42"})
        assert response.status_code == 401
        assert response.json()["correlation_id"] == "edge-7f3a.42"
        assert response.headers["X-Correlation-ID"] == "edge-7f3a.42"


@pytest.mark.parametrize("unsafe", ["has space", "x" * 65, "<script>", "a\tb"])
async def test_an_unsafe_incoming_request_id_is_replaced(sqlite_api: ApiClient, unsafe: str) -> None:
    response = await sqlite_api.http.get("/v1/locations", headers={"X-Request-ID": unsafe})
    assert re.fullmatch(r"[0-9a-f]{16}", response.json()["correlation_id"])
    assert unsafe not in response.text


async def test_a_validation_problem_names_the_field_and_carries_a_correlation_id(
    sqlite_api: ApiClient,
) -> None:
    response = await sqlite_api.as_("stock").put(
        "/v1/items", json=[{"sku": "A", "category": "c", "price": -1}]
    )
    assert response.status_code == 422
    body = response.json()
    assert body["errors"][0]["field"] == "[0].price" and body["correlation_id"]
    assert response.headers["X-Correlation-ID"] == body["correlation_id"]


async def test_an_unexpected_error_answers_500_naming_nothing_and_logs_it(
    sqlite_api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    from litestar import get

    from service.security import requires

    @get("/v1/explodes", opt=requires("planner"), sync_to_thread=False)
    def explodes() -> None:
        raise RuntimeError("cannot open /srv/secret/config.ini at 10.0.0.7:5432")

    sqlite_api.http.app.register(explodes)
    with caplog.at_level(logging.ERROR):
        response = await sqlite_api.as_("planner").get("/v1/explodes")
    assert response.status_code == 500
    correlation_id = assert_reveals_nothing(response, "/srv/secret", "10.0.0.7", "5432")
    [record] = [r for r in caplog.records if correlation_id in r.getMessage()]
    assert record.exc_info is not None and "10.0.0.7" in str(record.exc_info[1])


async def test_a_framework_5xx_keeps_its_status_and_names_nothing(
    sqlite_api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    from litestar import get
    from litestar.exceptions import HTTPException

    from service.security import requires

    @get("/v1/framework-fault", opt=requires("planner"), sync_to_thread=False)
    def fault() -> None:
        raise HTTPException(
            status_code=503, detail="pool at 10.0.0.7:6379 exhausted", headers={"Retry-After": "3"}
        )

    sqlite_api.http.app.register(fault)
    with caplog.at_level(logging.ERROR):
        response = await sqlite_api.as_("planner").get("/v1/framework-fault")
    assert response.status_code == 503 and response.headers["Retry-After"] == "3"
    correlation_id = assert_reveals_nothing(response, "10.0.0.7", "6379")
    assert any(correlation_id in record.getMessage() for record in caplog.records)
