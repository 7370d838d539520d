"""A shadow ruleset version is evaluated on live decisions, its differences answered and logged, never
acted on."""

from __future__ import annotations

from pathlib import Path

from service.db.engine import create_engine
from service.db.migrate import upgrade
from service.settings import DatabaseSettings
from tests.api.decisions_fixtures import decisions_api

RULESET = Path(__file__).resolve().parents[2] / "rulesets" / "transfer" / "store-transfer-approval.yaml"
AVAILABILITY = Path(__file__).resolve().parents[2] / "rulesets" / "availability" / "channel-availability.yaml"


async def test_a_shadow_version_records_its_differences_without_acting(sqlite_url: str) -> None:
    engine = create_engine(DatabaseSettings(url=sqlite_url))
    await upgrade(engine)
    await engine.dispose()
    stricter = (
        RULESET.read_text()
        .replace("when: transfer.value <= 500", "when: transfer.value <= 30")
        .replace(
            "    expect: {outcome: approve, rules: [auto-approve-small]}", "    expect: {outcome: route}"
        )
    )
    async with decisions_api(sqlite_url) as api:
        client = api.client
        created = await client.as_("author").post(
            "/v1/rulesets/store-transfer-approval/versions", json={"yaml": stricter}
        )
        assert created.status_code in (200, 201), created.text
        version = created.json()["version"]
        shadowed = await client.as_("publisher").post(
            f"/v1/rulesets/store-transfer-approval/versions/{version}/shadow"
        )
        assert shadowed.status_code == 200, shadowed.text
        body = {
            "transfer_id": "t-s",
            "sku": "TEE-001",
            "qty": 5,
            "from_location": "dc-manchester",
            "to_location": "store-leeds",
            "requested_by": {"id": "u-1", "role": "store_associate"},
        }
        answer = (await api.post("transfer", body)).json()
        assert answer["decision"]["outcome"] == "approve"
        assert answer["shadow"]["ruleset"]["version"] == version
        assert answer["shadow"]["differences"]["outcome"] == {"active": "approve", "shadow": "route"}
        logged = (await client.as_("decide").get(f"/v1/decisions/{answer['decision_id']}")).json()
        assert logged["shadow"]["differences"]["outcome"]["shadow"] == "route"


async def test_a_shadow_availability_version_reports_what_it_would_let_the_channel_sell(
    sqlite_url: str,
) -> None:
    engine = create_engine(DatabaseSettings(url=sqlite_url))
    await upgrade(engine)
    await engine.dispose()
    text = AVAILABILITY.read_text()
    # stores keep five units back from online channels instead of two
    stricter = text.replace(
        "then: {floor: 2, low_stock_threshold: 4}", "then: {floor: 5, low_stock_threshold: 4}"
    ).replace(
        "expect: {eligible: true, floor: 2, low_stock_threshold: 4}",
        "expect: {eligible: true, floor: 5, low_stock_threshold: 4}",
    )
    assert stricter != text
    async with decisions_api(sqlite_url) as api:
        client = api.client
        before = (await api.post("availability", {"channel": "ecommerce", "skus": ["TEE-001"]})).json()
        assert "shadow" not in before
        created = await client.as_("author").post(
            "/v1/rulesets/channel-availability/versions", json={"yaml": stricter}
        )
        assert created.status_code in (200, 201), created.text
        version = created.json()["version"]
        shadowed = await client.as_("publisher").post(
            f"/v1/rulesets/channel-availability/versions/{version}/shadow"
        )
        assert shadowed.status_code == 200, shadowed.text
        answer = (await api.post("availability", {"channel": "ecommerce", "skus": ["TEE-001"]})).json()
        active = before["decision"]["skus"][0]["sellable"]
        # the answer is still the active version's; two stores (9 and 8 units) each keep 3 more back
        assert answer["decision"]["skus"][0]["sellable"] == active
        assert answer["shadow"]["ruleset"]["version"] == version
        assert answer["shadow"]["error"] is None
        assert answer["shadow"]["differences"] == {
            "sellable.TEE-001": {"active": active, "shadow": active - 6}
        }
        logged = (await client.as_("decide").get(f"/v1/decisions/{answer['decision_id']}")).json()
        assert logged["shadow"]["differences"]["sellable.TEE-001"]["shadow"] == active - 6
