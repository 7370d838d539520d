"""The service, fuzzed from its own OpenAPI document, answers no input with a server error and nothing it
does not document.

Schemathesis generates requests for every operation from `/schema/openapi.json` (its examples, then
generated values, valid and invalid) and sends them to the real service on loopback, on PostgreSQL (the
database with the narrower integers), with a key that carries every role. Each answer must be no 5xx,
have a status code the operation documents, the documented content type, and a body that matches the
documented schema. Generation is deterministic (`--generation-deterministic`: Hypothesis' derandomize,
no example database) and bounded (`EXAMPLES_PER_OPERATION`), so every run sends the same requests in the
same order; about 45 s on an idle 2-core machine.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.db.engine import create_engine, session_factory
from service.db.migrate import upgrade
from service.demo import LOCATIONS
from service.security.keys import ROLES, create_key
from service.settings import DatabaseSettings
from tests.conftest import _reset_postgres
from tests.server import running_server

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
]
PHASES = ["examples", "coverage", "fuzzing", "stateful"]
EXAMPLES_PER_OPERATION = 15
# The demo network and the guide's item and stock: the bodies the document gives as examples use them.
ITEMS = [{"sku": "SKU-GUIDE", "category": "apparel", "price": 25.0, "cost": 9.0, "season_end": "2027-01-31"}]
STOCK = [
    {"sku": "SKU-GUIDE", "location": "STORE-MAN-01", "sellable": 3},
    {"sku": "SKU-GUIDE", "location": "DC-NORTH", "sellable": 40, "in_transit": 12},
]


async def _migrate_and_key(url: str) -> str:
    await _reset_postgres(url)
    engine = create_engine(DatabaseSettings(url=url))
    try:
        await upgrade(engine)
        return await create_key(session_factory(engine), "fuzz", list(ROLES))
    finally:
        await engine.dispose()


def _seed(base: str, headers: dict[str, str]) -> None:
    """Some master data and stock, so generated decisions and reservations reach past the lookups."""
    for path, body in (("/v1/locations", LOCATIONS), ("/v1/items", ITEMS), ("/v1/stock", STOCK)):
        response = httpx.put(f"{base}{path}", json=body, headers=headers, timeout=30)
        assert response.status_code == 200, (path, response.text)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, postgres_server_database: str) -> Iterator[Any]:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    (workdir / "var").mkdir()
    key = asyncio.run(_migrate_and_key(postgres_server_database))
    env = {
        "DATABASE_URL": postgres_server_database,
        "STOCK_BACKEND": "sql",
        "RULES_ENGINE": "durable",
        "AUTO_MIGRATE": "0",
    }
    with running_server(workdir, env=env) as base:
        headers = {"Authorization": f"Bearer {key}"}
        _seed(base, headers)
        yield base, headers


def test_no_input_answers_a_server_error_or_an_undocumented_answer(served: Any, tmp_path: Path) -> None:
    base, headers = served
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{base}/schema/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        ",".join(PHASES),
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--no-color",
        "--report",
        "ndjson",
        "--report-dir",
        str(tmp_path),
        *[option for name, value in headers.items() for option in ("--header", f"{name}: {value}")],
    ]
    # run in tmp_path: the command line tool keeps its state in a `.schemathesis` folder of its working directory
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
