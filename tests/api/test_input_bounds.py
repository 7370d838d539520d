"""Input the database cannot hold, or no decoder should recurse into, is refused up front by name.

A version number past PostgreSQL's INTEGER, a master data value past its column, an impossible calendar
date, a body nested deeper than the decoder's limit: each answers a problem (404, 422 or 400) naming the
field, on SQLite and on PostgreSQL, and changes nothing; none answers 500.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.api.body import MAX_DEPTH, depth
from service.db.base import INTEGER_MAX
from tests.apiclient import ApiClient

RULESET = "/v1/rulesets/channel-priority"  # shipped, seeded at start with version 1
PAST_INTEGER = INTEGER_MAX + 1
PAST_BIGINT = 2**63


def _fields(response: Any) -> list[str]:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return [error["field"] for error in response.json().get("errors", [])]


@pytest.mark.parametrize("number", [PAST_INTEGER, PAST_BIGINT])
async def test_a_version_number_past_the_integer_column_is_refused_naming_it(
    api: ApiClient, number: int
) -> None:
    admin = api.as_("admin")
    for method, path in (
        ("get", f"{RULESET}/versions/{number}"),
        ("get", f"{RULESET}/versions/{number}/diff"),
        ("post", f"{RULESET}/versions/{number}/publish"),
        ("post", f"{RULESET}/versions/{number}/shadow"),
        ("delete", f"{RULESET}/versions/{number}/shadow"),
    ):
        response = await getattr(admin, method)(path)
        assert response.status_code == 422, (method, path, response.text)
        assert _fields(response) == ["path.version"], (method, path)
    evaluate = await admin.post(f"{RULESET}/versions/{number}/evaluate", json={"facts": {}})
    assert (evaluate.status_code, _fields(evaluate)) == (422, ["path.version"])
    against = await admin.get(f"{RULESET}/versions/1/diff", params={"against": str(number)})
    assert (against.status_code, _fields(against)) == (422, ["query.against"])
    rollback = await admin.post(f"{RULESET}/rollback", json={"version": number})
    assert (rollback.status_code, _fields(rollback)) == (422, ["version"])


async def test_the_largest_integer_version_is_looked_up_and_not_found(api: ApiClient) -> None:
    response = await api.as_("admin").get(f"{RULESET}/versions/{INTEGER_MAX}")
    assert (response.status_code, _fields(response)) == (404, ["version"])
    against = await api.as_("admin").get(f"{RULESET}/versions/1/diff", params={"against": str(INTEGER_MAX)})
    assert (against.status_code, _fields(against)) == (404, ["query.against"])


async def test_a_comparison_target_in_other_digits_is_refused_naming_it(api: ApiClient) -> None:
    response = await api.as_("admin").get(f"{RULESET}/versions/1/diff", params={"against": "²"})
    assert (response.status_code, _fields(response)) == (422, ["query.against"])


async def test_a_simulation_version_past_the_integer_column_is_refused_naming_it(api: ApiClient) -> None:
    body = {"scenario": "black-friday", "versions": [[{"name": "channel-priority", "version": PAST_INTEGER}]]}
    response = await api.as_("planner").post("/v1/simulations", json=body)
    assert (response.status_code, _fields(response)) == (422, ["versions[0][0].version"])


LOCATION = {"id": "S1", "type": "store", "region": "north", "lat": 53.4, "lon": -2.2}
ITEM = {"sku": "A", "category": "c", "price": 2.0, "cost": 1.0}
PROMOTION = {"id": "P", "skus": ["A"], "start": "2026-11-27T00:00:00Z", "end": "2026-11-28T00:00:00Z"}


@pytest.mark.parametrize(
    ("path", "row", "field"),
    [
        ("/v1/locations", {**LOCATION, "priority": PAST_INTEGER}, "priority"),
        ("/v1/locations", {**LOCATION, "priority": -PAST_INTEGER - 1}, "priority"),
        ("/v1/locations", {**LOCATION, "daily_capacity": PAST_INTEGER}, "daily_capacity"),
        ("/v1/items", {**ITEM, "case_pack": PAST_INTEGER}, "case_pack"),
        ("/v1/items", {**ITEM, "lead_time_days": PAST_BIGINT}, "lead_time_days"),
        ("/v1/promotions", {**PROMOTION, "per_order_cap": PAST_INTEGER}, "per_order_cap"),
        ("/v1/items", {**ITEM, "supplier": "s" * 65}, "supplier"),  # a VARCHAR(64) column
    ],
)
async def test_a_master_data_value_past_its_column_is_refused_and_nothing_is_stored(
    api: ApiClient, path: str, row: dict[str, Any], field: str
) -> None:
    stock = api.as_("stock")
    response = await stock.put(path, json=[row])
    assert (response.status_code, _fields(response)) == (422, [f"[0].{field}"])
    assert (await stock.get(path)).json() == []


@pytest.mark.parametrize("season_end", ["2025-13-45", "0000-00-00", "2026-02-29"])
async def test_an_impossible_season_end_is_refused_and_nothing_is_stored(
    api: ApiClient, season_end: str
) -> None:
    stock = api.as_("stock")
    response = await stock.put("/v1/items", json=[ITEM, {**ITEM, "sku": "B", "season_end": season_end}])
    assert (response.status_code, _fields(response)) == (422, ["[1].season_end"])
    assert season_end in response.json()["errors"][0]["reason"]
    assert (await stock.get("/v1/items")).json() == []


async def test_a_real_season_end_is_stored(api: ApiClient) -> None:
    stock = api.as_("stock")
    assert (await stock.put("/v1/items", json=[{**ITEM, "season_end": "2028-02-29"}])).status_code == 200
    assert [item["season_end"] for item in (await stock.get("/v1/items")).json()] == ["2028-02-29"]


async def test_a_promotion_time_without_a_zone_is_refused_naming_it(api: ApiClient) -> None:
    response = await api.as_("stock").put(
        "/v1/promotions", json=[{**PROMOTION, "start": "2026-11-27T00:00:00"}]
    )
    assert (response.status_code, _fields(response)) == (422, ["[0].start"])


def _evaluate_body(facts_depth: int) -> bytes:
    """An evaluate body whose facts nest `facts_depth` objects (the body itself is one more level)."""
    return b'{"facts": ' + b'{"a": ' * (facts_depth - 1) + b"{}" + b"}" * (facts_depth - 1) + b"}"


async def test_a_body_nested_past_the_limit_is_refused_before_decoding(sqlite_api: ApiClient) -> None:
    author = sqlite_api.as_("author")
    path, headers = f"{RULESET}/versions/1/evaluate", {"content-type": "application/json"}
    response = await author.post(path, content=_evaluate_body(1000), headers=headers)
    assert (response.status_code, _fields(response)) == (400, ["body"])
    assert str(MAX_DEPTH) in response.json()["errors"][0]["reason"]
    past = await author.post(path, content=_evaluate_body(MAX_DEPTH), headers=headers)
    assert past.status_code == 400, past.text
    within = await author.post(path, content=_evaluate_body(MAX_DEPTH - 1), headers=headers)
    assert within.status_code != 400, within.text
    assert within.status_code < 500, within.text


async def test_a_nul_character_in_a_string_is_refused_and_nothing_is_stored(api: ApiClient) -> None:
    # PostgreSQL cannot store U+0000 in text: found by the schema fuzzer as a 500 on PUT /v1/locations
    location = {"id": "S9", "type": "store", "region": "north\u0000", "lat": 1.0, "lon": 2.0}
    headers = {"content-type": "application/json"}
    raw = json.dumps([location]).encode()
    assert b"\\u0000" in raw
    response = await api.as_("stock").put("/v1/locations", content=raw, headers=headers)
    assert (response.status_code, _fields(response)) == (422, ["body"])
    listed = (await api.as_("stock").get("/v1/locations")).json()
    assert all(
        row["id"] != "S9" for row in (listed.get("locations", listed) if isinstance(listed, dict) else listed)
    )
    literal = json.dumps([{**location, "region": "north\\u0000"}]).encode()  # a backslash, then text
    assert (await api.as_("stock").put("/v1/locations", content=literal, headers=headers)).status_code == 200


def test_depth_counts_nesting_not_brackets_inside_strings() -> None:
    assert depth(b"[" * 100 + b"]" * 100) == 100
    assert depth(b'{"a": "' + b"[" * 100 + b'"}') == 1
    assert depth(b'[{"a": "' + b"[{" * 100 + b'\\"[["}]') == 2
    assert depth(b"[]" * 1000) == 1


async def test_an_empty_body_is_refused_where_a_body_is_required_and_is_the_default_where_optional(
    sqlite_api: ApiClient,
) -> None:
    admin = sqlite_api.as_("admin")
    json_type = {"content-type": "application/json"}
    for body in (b"", b"  \n"):
        refused = await admin.post("/v1/keys", content=body, headers=json_type)
        assert (refused.status_code, _fields(refused)) == (400, ["body"]), refused.text
        assert refused.json()["errors"][0]["reason"] == "empty body"
    created = await admin.post("/v1/keys", json={"name": "to-rotate", "roles": ["decide"]})
    assert created.status_code == 201, created.text
    for body in (b"", b" "):  # no body: a rotation without an expiry
        rotated = await admin.post(f"/v1/keys/{created.json()['id']}/rotate", content=body, headers=json_type)
        assert rotated.status_code == 201, rotated.text
        assert rotated.json()["expires_at"] is None
        created = rotated
    unknown = await admin.post(f"/v1/keys/{created.json()['id']}/rotate", json={"expires": "soon"})
    assert (unknown.status_code, _fields(unknown)) == (422, ["expires"])
