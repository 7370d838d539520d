"""Ruleset endpoints on SQLite and PostgreSQL: versions, four-eyes publishing, diff, dry run, shadow, rollback."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from service.rules.trial import TrialWorker
from tests.apiclient import ApiClient, make_settings
from tests.unit.lifecycle.apps import empty_dir, problem_fields, rules_api_client
from tests.unit.lifecycle.samples import (
    BROKEN_YAML,
    NAME,
    PROMO_TRANSFER,
    SMALL_TRANSFER,
    ZERO_TRANSFER,
    transfer_yaml,
)

BASE = f"/v1/rulesets/{NAME}"
YAML = {"content-type": "application/yaml"}


@pytest.fixture
async def api(database_url: str, tmp_path: Path, trials: TrialWorker) -> AsyncIterator[ApiClient]:
    settings = make_settings(database_url, rulesets_dir=empty_dir(tmp_path))
    async with rules_api_client(settings, {"pat": ["author", "publisher"]}, trials) as client:
        yield client


async def create(api: ApiClient, text: str, role: str = "author") -> Any:
    return await api.as_(role).post(f"{BASE}/versions", content=text.encode(), headers=YAML)


async def published(api: ApiClient, marker: str, **kwargs: Any) -> int:
    response = await create(api, transfer_yaml(marker, **kwargs))
    version = int(response.json()["version"])
    assert (await api.as_("publisher").post(f"{BASE}/versions/{version}/publish")).status_code == 200
    return version


async def audit_actions(api: ApiClient) -> list[tuple[str, str]]:
    trail = (await api.as_("author").get(BASE)).json()["audit"]
    return [(entry["action"], entry["actor"]) for entry in reversed(trail)]


async def test_yaml_body_creates_a_draft_with_its_validation_report(api: ApiClient) -> None:
    response = await create(api, transfer_yaml())
    body = response.json()
    assert response.status_code == 201
    assert (body["version"], body["status"], body["author"], body["created"]) == (
        1,
        "draft",
        "test-author",
        True,
    )
    assert {t["engine"] for t in body["validation"]["tests"]} == {"python", "durable"}
    assert all(t["passed"] for t in body["validation"]["tests"])


async def test_json_body_with_yaml_field_creates_a_draft(api: ApiClient) -> None:
    response = await api.as_("author").post(f"{BASE}/versions", json={"yaml": transfer_yaml()})
    assert response.status_code == 201 and response.json()["version"] == 1


async def test_same_content_returns_the_existing_version(api: ApiClient) -> None:
    first = (await create(api, transfer_yaml())).json()
    again = await create(api, transfer_yaml())
    assert again.status_code == 200
    assert (again.json()["version"], again.json()["created"], again.json()["sha256"]) == (
        1,
        False,
        first["sha256"],
    )


async def test_invalid_yaml_is_422_with_located_errors_and_stores_nothing(api: ApiClient) -> None:
    response = await create(api, BROKEN_YAML)
    assert response.status_code == 422
    assert problem_fields(response)
    error = response.json()["errors"][0]
    assert error["line"] >= 1 and error["column"] >= 1 and error["source"]
    assert (await api.as_("author").get(BASE)).status_code == 404


async def test_name_in_document_must_match_the_path(api: ApiClient) -> None:
    response = await create(api, transfer_yaml(name="another-name"))
    assert response.status_code == 422
    assert problem_fields(response) == ["ruleset"]


async def test_json_body_without_yaml_names_the_field(api: ApiClient) -> None:
    response = await api.as_("author").post(f"{BASE}/versions", json={"text": "x"})
    assert response.status_code == 422
    assert "text" in problem_fields(response)[0] or "yaml" in problem_fields(response)[0]


async def test_unsupported_content_type_is_415(api: ApiClient) -> None:
    response = await api.as_("author").post(
        f"{BASE}/versions", content=b"<ruleset/>", headers={"content-type": "application/xml"}
    )
    assert response.status_code == 415
    assert problem_fields(response) == ["content-type"]


async def test_creating_a_version_needs_the_author_role(api: ApiClient) -> None:
    response = await create(api, transfer_yaml(), role="publisher")
    assert response.status_code == 403


async def test_list_shows_each_ruleset_with_the_served_version(api: ApiClient) -> None:
    await published(api, "v1")
    body = (await api.as_("planner").get("/v1/rulesets")).json()
    (entry,) = body["rulesets"]
    assert (entry["name"], entry["kind"], entry["active_version"], entry["served"]["version"]) == (
        NAME,
        "transfer",
        1,
        1,
    )
    assert body["kind_defaults"] == {"transfer": NAME}


async def test_unknown_ruleset_is_404_naming_it(api: ApiClient) -> None:
    response = await api.as_("author").get("/v1/rulesets/no-such-thing")
    assert response.status_code == 404
    assert problem_fields(response) == ["name"]


async def test_get_version_returns_text_and_validation(api: ApiClient) -> None:
    await create(api, transfer_yaml())
    body = (await api.as_("author").get(f"{BASE}/versions/1")).json()
    assert body["yaml"] == transfer_yaml() and body["validation"]["ok"] is True


async def test_unknown_version_is_404_naming_the_version(api: ApiClient) -> None:
    await create(api, transfer_yaml())
    response = await api.as_("author").get(f"{BASE}/versions/7")
    assert response.status_code == 404
    assert problem_fields(response) == ["version"]


async def test_publish_by_another_person_activates_the_version(api: ApiClient) -> None:
    await create(api, transfer_yaml())
    response = await api.as_("publisher").post(f"{BASE}/versions/1/publish")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["publisher"]) == ("published", "test-publisher")
    served = (await api.as_("author").get(BASE)).json()["served"]
    assert (served["version"], served["sha256"]) == (1, response.json()["sha256"])


async def test_publishing_ones_own_draft_is_409(api: ApiClient) -> None:
    await create(api, transfer_yaml(), role="pat")
    response = await api.as_("pat").post(f"{BASE}/versions/1/publish")
    assert response.status_code == 409
    assert problem_fields(response) == ["version"]
    assert (await api.as_("author").get(f"{BASE}/versions/1")).json()["status"] == "draft"


async def test_publishing_a_non_draft_is_409(api: ApiClient) -> None:
    await published(api, "v1")
    response = await api.as_("pat").post(f"{BASE}/versions/1/publish")
    assert response.status_code == 409
    assert problem_fields(response) == ["version"]


async def test_publishing_a_version_with_failing_tests_is_409(api: ApiClient) -> None:
    created = await create(api, transfer_yaml(passing=False))
    assert created.status_code == 201 and created.json()["validation"]["ok"] is False
    response = await api.as_("publisher").post(f"{BASE}/versions/1/publish")
    assert response.status_code == 409
    assert response.json()["errors"][0]["failed_tests"] == ["a small transfer is approved"]


async def test_publishing_needs_the_publisher_role(api: ApiClient) -> None:
    await create(api, transfer_yaml())
    assert (await api.as_("author").post(f"{BASE}/versions/1/publish")).status_code == 403


async def test_diff_against_active_lists_changed_rules(api: ApiClient) -> None:
    await published(api, "v1")
    await create(api, transfer_yaml("v1", limit=100))
    body = (await api.as_("author").get(f"{BASE}/versions/2/diff")).json()
    assert (body["from"]["version"], body["to"]["version"]) == (1, 2)
    assert [change["id"] for change in body["diff"]["changed"]] == ["auto-approve-small"]


async def test_diff_against_a_version_number(api: ApiClient) -> None:
    await create(api, transfer_yaml("v1"))
    await create(api, transfer_yaml("v1", limit=100))
    body = (await api.as_("author").get(f"{BASE}/versions/1/diff", params={"against": "2"})).json()
    assert (body["from"]["version"], body["to"]["version"], body["identical"]) == (2, 1, False)


async def test_diff_against_active_without_one_is_409(api: ApiClient) -> None:
    await create(api, transfer_yaml())
    response = await api.as_("author").get(f"{BASE}/versions/1/diff")
    assert response.status_code == 409
    assert problem_fields(response) == ["query.against"]


async def test_diff_against_garbage_is_refused_naming_the_parameter(api: ApiClient) -> None:
    await create(api, transfer_yaml())
    response = await api.as_("author").get(f"{BASE}/versions/1/diff", params={"against": "latest"})
    assert response.status_code in (400, 422)
    assert problem_fields(response) == ["query.against"]


async def test_evaluate_a_draft_gives_result_and_full_trace(api: ApiClient) -> None:
    await create(api, transfer_yaml("v1"))
    response = await api.as_("author").post(f"{BASE}/versions/1/evaluate", json={"facts": PROMO_TRANSFER})
    body = response.json()
    assert response.status_code == 200
    assert (body["result"]["outcome"], body["matched"], body["ruleset"]["version"]) == (
        "route",
        ["promo-at-source"],
        1,
    )
    assert body["trace"] is not None and body["status"] == "draft"


async def test_evaluate_with_trace_none_returns_no_trace(api: ApiClient) -> None:
    await create(api, transfer_yaml("v1"))
    response = await api.as_("author").post(
        f"{BASE}/versions/1/evaluate", json={"facts": SMALL_TRANSFER, "trace": "none", "engine": "durable"}
    )
    assert (response.json()["trace"], response.json()["engine"]) == (None, "durable")


async def test_evaluate_without_facts_names_the_field(api: ApiClient) -> None:
    await create(api, transfer_yaml("v1"))
    response = await api.as_("author").post(f"{BASE}/versions/1/evaluate", json={"trace": "full"})
    assert response.status_code == 422
    assert problem_fields(response) == ["facts"]


async def test_evaluate_active_names_the_served_version(api: ApiClient) -> None:
    await published(api, "v1")
    body = (await api.as_("decide").post(f"{BASE}/evaluate", json={"facts": SMALL_TRANSFER})).json()
    assert (body["ruleset"]["version"], body["result"]["reason"], body["shadow"]) == (1, "v1", None)


async def test_shadow_version_is_evaluated_beside_the_active_one(api: ApiClient) -> None:
    await published(api, "v1")
    await create(api, transfer_yaml("v2", limit=100))
    response = await api.as_("publisher").post(f"{BASE}/versions/2/shadow")
    assert response.status_code == 200
    body = (await api.as_("decide").post(f"{BASE}/evaluate", json={"facts": SMALL_TRANSFER})).json()
    assert body["result"]["outcome"] == "approve"
    assert body["shadow"]["ruleset"]["version"] == 2
    assert body["shadow"]["differences"]["outcome"] == {"active": "approve", "shadow": "route"}
    assert (await api.as_("author").get(BASE)).json()["shadow_version"] == 2


async def test_shadow_of_the_active_version_is_409(api: ApiClient) -> None:
    await published(api, "v1")
    response = await api.as_("publisher").post(f"{BASE}/versions/1/shadow")
    assert response.status_code == 409
    assert problem_fields(response) == ["version"]


async def test_delete_shadow_stops_it(api: ApiClient) -> None:
    await published(api, "v1")
    await create(api, transfer_yaml("v2"))
    await api.as_("publisher").post(f"{BASE}/versions/2/shadow")
    assert (await api.as_("publisher").delete(f"{BASE}/versions/2/shadow")).status_code == 204
    body = (await api.as_("decide").post(f"{BASE}/evaluate", json={"facts": SMALL_TRANSFER})).json()
    assert body["shadow"] is None


async def test_delete_shadow_of_a_version_not_in_shadow_is_404(api: ApiClient) -> None:
    await published(api, "v1")
    await create(api, transfer_yaml("v2"))
    response = await api.as_("publisher").delete(f"{BASE}/versions/2/shadow")
    assert response.status_code == 404
    assert problem_fields(response) == ["version"]


async def test_rollback_without_body_restores_the_previous_version(api: ApiClient) -> None:
    await published(api, "v1")
    await published(api, "v2")
    response = await api.as_("publisher").post(f"{BASE}/rollback")
    assert response.status_code == 200 and response.json()["version"] == 1
    body = (await api.as_("decide").post(f"{BASE}/evaluate", json={"facts": SMALL_TRANSFER})).json()
    assert (body["ruleset"]["version"], body["result"]["reason"]) == (1, "v1")


async def test_rollback_to_a_named_version(api: ApiClient) -> None:
    await published(api, "v1")
    await published(api, "v2")
    await published(api, "v3")
    response = await api.as_("publisher").post(f"{BASE}/rollback", json={"version": 1})
    assert response.json()["version"] == 1
    versions = (await api.as_("author").get(BASE)).json()["versions"]
    assert [(v["version"], v["status"]) for v in versions] == [
        (1, "published"),
        (2, "retired"),
        (3, "retired"),
    ]


async def test_rollback_to_a_draft_is_409(api: ApiClient) -> None:
    await published(api, "v1")
    await create(api, transfer_yaml("v2"))
    response = await api.as_("publisher").post(f"{BASE}/rollback", json={"version": 2})
    assert response.status_code == 409
    assert problem_fields(response) == ["version"]


async def test_rollback_with_a_bad_version_names_the_field(api: ApiClient) -> None:
    await published(api, "v1")
    response = await api.as_("publisher").post(f"{BASE}/rollback", json={"version": 0})
    assert response.status_code == 422
    assert problem_fields(response) == ["version"]


async def test_every_change_is_in_the_audit_trail(api: ApiClient) -> None:
    await published(api, "v1")
    await create(api, transfer_yaml("v2"))
    await api.as_("publisher").post(f"{BASE}/versions/2/shadow")
    await api.as_("publisher").delete(f"{BASE}/versions/2/shadow")
    await api.as_("publisher").post(f"{BASE}/versions/2/publish")
    await api.as_("publisher").post(f"{BASE}/rollback")
    assert await audit_actions(api) == [
        ("ruleset.version.create", "test-author"),
        ("ruleset.publish", "test-publisher"),
        ("ruleset.version.create", "test-author"),
        ("ruleset.shadow.set", "test-publisher"),
        ("ruleset.shadow.clear", "test-publisher"),
        ("ruleset.publish", "test-publisher"),
        ("ruleset.rollback", "test-publisher"),
    ]


async def test_a_refused_change_leaves_no_audit_row(api: ApiClient) -> None:
    await create(api, transfer_yaml(), role="pat")
    await api.as_("pat").post(f"{BASE}/versions/1/publish")
    assert await audit_actions(api) == [("ruleset.version.create", "pat")]


async def test_facts_a_rule_cannot_compute_with_are_422(api: ApiClient) -> None:
    await create(api, transfer_yaml("v1", divide=True))
    response = await api.as_("author").post(f"{BASE}/versions/1/evaluate", json={"facts": ZERO_TRANSFER})
    assert response.status_code == 422
    assert problem_fields(response) == ["facts"]


async def test_kind_default_can_be_moved_to_another_ruleset(api: ApiClient) -> None:
    await published(api, "v1")
    other = "/v1/rulesets/transfer-strict"
    await api.as_("author").post(
        f"{other}/versions", content=transfer_yaml("s1", name="transfer-strict").encode(), headers=YAML
    )
    await api.as_("publisher").post(f"{other}/versions/1/publish")
    response = await api.as_("publisher").post(f"{other}/kind-default")
    assert response.status_code == 200 and response.json()["kind_default"] is True
    listed = (await api.as_("author").get("/v1/rulesets")).json()
    assert listed["kind_defaults"] == {"transfer": "transfer-strict"}


def billion_laughs(levels: int = 9) -> str:
    """The 660-byte document whose nine levels of nine aliases expand to 9**9 strings."""
    lines = [
        f"ruleset: {NAME}",
        "kind: transfer",
        'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    ]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ",".join([f"*a{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def rounding_yaml(digits: str) -> str:
    """The transfer ruleset whose promotion rule computes its SLA with `round(..., digits)`."""
    sla = f'"= ceil(round(source.open_promotions, {digits}))"'
    return transfer_yaml("v1").replace("sla_hours: 4,", f"sla_hours: {sla},")


async def test_a_billion_laughs_document_is_422_at_once_with_flat_memory(api: ApiClient) -> None:
    text = billion_laughs()
    assert len(text.encode()) <= 660
    tracemalloc.start()
    try:
        response = await create(api, text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 422
    assert problem_fields(response) == ["yaml"]
    error = response.json()["errors"][0]
    assert "anchors (&a0) are not accepted" in error["reason"] and error["line"] == 3
    assert peak < 8 * 2**20
    assert (await api.as_("author").get(BASE)).status_code == 404


async def test_yaml_nested_800_deep_is_422_naming_the_depth_bound(api: ApiClient) -> None:
    text = f"ruleset: {NAME}\nkind: transfer\nrules: " + "[" * 800 + "]" * 800 + "\n"
    response = await create(api, text)
    assert response.status_code == 422
    assert problem_fields(response) == ["yaml"]
    assert "nests more than 32 levels" in response.json()["errors"][0]["reason"]
    assert (await api.as_("author").get(BASE)).status_code == 404


async def test_a_draft_rounding_to_digits_out_of_range_is_422_naming_the_value(api: ApiClient) -> None:
    response = await create(api, rounding_yaml("-10000000"))
    assert response.status_code == 422
    assert problem_fields(response) == ["rules[1].then.sla_hours"]
    error = response.json()["errors"][0]
    assert error["rule_id"] == "promo-at-source"
    assert "round() takes digits from -12 to 12, got -10000000" in error["reason"]
    assert (await api.as_("author").get(BASE)).status_code == 404


async def test_a_dry_run_rounding_to_computed_digits_out_of_range_is_422_naming_the_value(
    api: ApiClient,
) -> None:
    assert (await create(api, rounding_yaml("0 - source.open_promotions"))).status_code == 201
    facts = {"transfer": {"value": 10.0}, "source": {"open_promotions": 10_000_000}}
    response = await api.as_("author").post(f"{BASE}/versions/1/evaluate", json={"facts": facts})
    assert response.status_code == 422
    assert problem_fields(response) == ["facts"]
    error = response.json()["errors"][0]
    assert (error["rule_id"], error["path"]) == ("promo-at-source", "rules[1].then.sla_hours")
    assert "round() takes digits from -12 to 12, got -10000000" in error["reason"]


async def test_facts_nested_past_the_bound_are_422_naming_where(api: ApiClient) -> None:
    await published(api, "v1")
    facts: dict[str, Any] = {}
    node = facts
    for _ in range(40):  # past the facts' bound (16), within the body's (64, tested with the body decoder)
        node["n"] = {}
        node = node["n"]
    for url in (f"{BASE}/versions/1/evaluate", f"{BASE}/evaluate"):
        response = await api.as_("author").post(url, json={"facts": facts})
        assert response.status_code == 422, url
        assert problem_fields(response) == ["facts" + ".n" * 16]


async def test_the_fleet_view_lists_this_worker_with_what_it_serves(api: ApiClient) -> None:
    assert (await api.http.get("/v1/rulesets/fleet")).status_code == 401
    before = (await api.as_("author").get("/v1/rulesets/fleet")).json()
    await published(api, "v1")  # this worker switches at once and writes its heartbeat then
    view = (await api.as_("author").get("/v1/rulesets/fleet")).json()
    assert view["generation"] > before["generation"]
    [worker] = view["workers"]
    assert (worker["alive"], worker["current"], view["alive"], view["behind"]) == (True, True, 1, 0)
    assert worker["generation"] == view["generation"]
    assert [(s["name"], s["version"], s["shadow"]) for s in worker["served"]] == [(NAME, 1, None)]
