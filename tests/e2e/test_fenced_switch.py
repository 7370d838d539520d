"""Two service hosts on one PostgreSQL: a host that cannot confirm the current ruleset generation refuses.

Host A loads the demo network; host B connects as a database role of its own. During a publish on A,
B's role loses read access to the generation counter (everything else still works: its keys, master
data, stock and decision log), so B cannot confirm what it serves. B must answer its transfer decisions
`503` once the switch deadline has passed, never with the replaced version from then on, and serve the
new version once its access is back. The fleet view shows B behind while it is cut off.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.db.engine import create_engine, session_factory
from service.security.keys import create_key
from service.settings import DatabaseSettings
from tests.server import running_server
from tests.services import postgres_database

pytestmark = pytest.mark.slow

DEADLINE_SECONDS = 5  # well above the 1 s poll, so a loaded machine does not trip it by itself
LIMIT_SECONDS = 30.0  # every wait below gives up after this
TRANSFER = {
    "transfer_id": "t-fence-1",
    "sku": "SKU-MUG",
    "qty": 2,
    "from_location": "STORE-MAN-01",
    "to_location": "STORE-LDS-01",
    "requested_by": {"id": "u-1", "role": "store_manager"},
}


def plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def sql(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(plain(url), timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def keys(url: str) -> dict[str, str]:
    engine = create_engine(DatabaseSettings(url=url))
    try:
        sessions = session_factory(engine)
        return {
            "publisher": await create_key(sessions, "pat", ["publisher"]),
            "author": await create_key(sessions, "alice", ["author"]),
            "decide": await create_key(sessions, "till", ["decide"]),
        }
    finally:
        await engine.dispose()


def wait_for(condition: Callable[[], bool]) -> bool:
    give_up = time.monotonic() + LIMIT_SECONDS
    while not condition():
        if time.monotonic() > give_up:
            return False
    return True


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[str, str, str, dict[str, str]]]:
    """(host A, host B, database URL, keys): two single-worker services, B logged in as its own role."""
    role = f"rp_host_b_{uuid.uuid4().hex[:10]}"
    with postgres_database() as url:
        common = {"RULES_SWITCH_DEADLINE_SECONDS": str(DEADLINE_SECONDS), "RULES_ENGINE": "python"}
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        with running_server(tmp_path / "a", env={**common, "DATABASE_URL": url}, demo=True) as a:
            asyncio.run(
                sql(
                    url,
                    f"CREATE ROLE {role} LOGIN",
                    f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}",
                    f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}",
                )
            )
            try:
                made = asyncio.run(keys(url))
                host, _, database = url.rpartition("@")[2].partition("/")
                b_url = f"postgresql+asyncpg://{role}@{host}/{database}"
                with running_server(tmp_path / "b", env={**common, "DATABASE_URL": b_url}) as b:
                    yield a, b, url, {**made, "role": role}
            finally:
                asyncio.run(sql(url, f"DROP OWNED BY {role}", f"DROP ROLE {role}"))


def decide(base: str, key: str) -> tuple[int, Any]:
    response = httpx.post(
        f"{base}/v1/decisions/transfer",
        json=TRANSFER,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10.0,
    )
    return response.status_code, response.json()


def version_of(body: Any) -> int:
    return int(body["ruleset"]["version"])


def test_a_host_that_cannot_confirm_the_generation_refuses_instead_of_deciding_stale(
    hosts: tuple[str, str, str, dict[str, str]],
) -> None:
    a, b, url, made = hosts
    for base in (a, b):
        status, body = decide(base, made["decide"])
        assert status == 200 and version_of(body) == 1, body
    name = "store-transfer-approval"
    yaml = (
        Path(__file__).resolve().parents[2] / "rulesets/transfer/store-transfer-approval.yaml"
    ).read_text()
    created = httpx.post(
        f"{a}/v1/rulesets/{name}/versions",
        content=yaml.replace("Route store-to-store", "Version 2. Route store-to-store"),
        headers={"Authorization": f"Bearer {made['author']}", "Content-Type": "application/yaml"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    publisher = {"Authorization": f"Bearer {made['publisher']}"}

    asyncio.run(sql(url, f"REVOKE ALL ON ruleset_generation FROM {made['role']}"))
    published = httpx.post(f"{a}/v1/rulesets/{name}/versions/2/publish", headers=publisher, timeout=30)
    assert published.status_code == 200, published.text
    assert wait_for(lambda: version_of(decide(a, made["decide"])[1]) == 2)

    answers: list[tuple[int, Any]] = []

    def refused() -> bool:
        answers.append(decide(b, made["decide"]))
        return answers[-1][0] == 503

    assert wait_for(refused), f"host B kept answering: {answers[-3:]}"
    status, body = answers[-1]
    assert "switch deadline" in body["detail"], body
    assert all(s in (200, 503) for s, _ in answers), answers
    # before its refusal B may still have answered from version 1 (within the deadline), never after
    after = [decide(b, made["decide"]) for _ in range(20)]
    assert [s for s, _ in after] == [503] * 20, after

    fleet = httpx.get(f"{a}/v1/rulesets/fleet", headers=publisher, timeout=10).json()
    assert fleet["alive"] == 2 and fleet["behind"] == 1, fleet
    ready = httpx.get(f"{b}/health/ready", timeout=10).json()
    assert "transfer" in ready["rules"]["unconfirmed_kinds"], ready

    asyncio.run(sql(url, f"GRANT SELECT ON ruleset_generation TO {made['role']}"))
    recovered: list[tuple[int, Any]] = []

    def serves_new() -> bool:
        recovered.append(decide(b, made["decide"]))
        return recovered[-1][0] == 200

    assert wait_for(serves_new), recovered[-3:]
    assert version_of(recovered[-1][1]) == 2, recovered[-1]
    assert all(version_of(body) == 2 for status, body in recovered if status == 200)
