"""Over HTTP on a Redis Cluster: a reservation the cluster would have to take on several slots is refused
with a 422 problem naming `lines` (never a 5xx) and changes nothing; the single-slot one is granted."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from redis.crc import key_slot

from tests.e2e.stock_server import backend_env, served


def _body(key: str, *skus: str) -> dict[str, object]:
    return {
        "order_id": key,
        "channel": "web",
        "idempotency_key": key,
        "lines": [{"sku": sku, "location": "S1", "qty": 1} for sku in skus],
        "ttl_seconds": 600,
    }


@pytest.mark.slow
def test_a_cross_slot_reservation_is_a_422_naming_lines_and_changes_nothing(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    first = "A1"
    other = next(f"B{i}" for i in range(100) if key_slot(f"B{i}".encode()) != key_slot(first.encode()))
    env = backend_env("redis-cluster", request, tmp_path)
    with (
        served(env, tmp_path, workers=1) as server,
        httpx.Client(base_url=server.base, headers=server.headers, timeout=10) as client,
    ):
        rows = [{"sku": sku, "location": "S1", "sellable": 3} for sku in (first, other)]
        assert client.put("/v1/stock", json=rows).status_code == 200
        refused = client.post("/v1/reservations", json=_body("k1", first, other))
        levels = [client.get(f"/v1/stock/{sku}").json() for sku in (first, other)]
        granted = client.post("/v1/reservations", json=_body("k2", first))
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "lines" in refused.text and "Redis Cluster" in refused.text
    assert [level["totals"]["available"] for level in levels] == [3, 3]
    assert granted.status_code == 201, granted.text
