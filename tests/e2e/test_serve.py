"""`retail-policy serve --demo`, as `make run` starts it: real process, real port, demo data, admin key."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.server import running_server


def test_demo_server_answers_with_real_data_and_prints_its_admin_key(tmp_path: Path) -> None:
    with running_server(tmp_path, demo=True, workers=2) as base:
        key = (tmp_path / "var" / "admin-key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        locations = httpx.get(f"{base}/v1/locations", headers=headers, timeout=5).json()
        assert {loc["id"] for loc in locations} >= {"DC-NORTH", "STORE-LON-01"}
        assert httpx.get(f"{base}/v1/locations", timeout=5).status_code == 401
        metrics = httpx.get(f"{base}/metrics", timeout=5)
        assert metrics.status_code == 200
    assert key in (tmp_path / "server.log").read_text()


def test_a_second_start_keeps_the_same_admin_key(tmp_path: Path) -> None:
    with running_server(tmp_path, demo=True):
        first = (tmp_path / "var" / "admin-key").read_text()
    with running_server(tmp_path, demo=True) as base:
        assert (tmp_path / "var" / "admin-key").read_text() == first
        response = httpx.get(
            f"{base}/v1/items", headers={"Authorization": f"Bearer {first.strip()}"}, timeout=5
        )
        assert len(response.json()) == 6
