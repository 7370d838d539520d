"""Console pages with the in-process client: located errors, the four-eyes rule, try-it, decisions, stock."""

from __future__ import annotations

import asyncio
import html
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import markupsafe

from service.db.engine import create_engine, session_factory
from service.security.keys import create_key
from service.workflow.exceptions import raise_exception
from tests.api.decisions_fixtures import NORTH
from tests.console.conftest import Console

RULESET = "rulesets/allocation/channel-priority.yaml"


def _yaml() -> str:
    return Path(RULESET).read_text()


async def test_a_draft_with_an_error_is_not_stored_and_the_error_is_shown_on_its_line(
    console: Console,
) -> None:
    await console.sign_in("author")
    text = _yaml()
    broken = text.replace("when: order.units >= 1", "when: order.units >= ", 1)
    line = text.splitlines().index("    when: order.units >= 1") + 1
    response = await console.post("/console/rulesets/channel-priority/versions", {"yaml": broken})
    assert response.status_code == 422
    marked = re.search(r'data-testid="line-error" data-line="(\d+)"', response.text)
    assert marked is not None and int(marked.group(1)) == line
    assert html.escape(broken.splitlines()[line - 1].strip()) in response.text  # the text is kept for fixing
    versions = (await console.api.client.as_("author").get("/v1/rulesets/channel-priority")).json()[
        "versions"
    ]
    assert [v["version"] for v in versions] == [1]


async def test_a_valid_draft_is_saved_and_its_page_shows_tests_on_both_engines_and_the_diff(
    console: Console,
) -> None:
    await console.sign_in("author")
    response = await console.post(
        "/console/rulesets/channel-priority/versions",
        {"yaml": _yaml().replace("max_distance_km: 800.0", "max_distance_km: 750.0", 1)},
    )
    assert response.status_code == 200 and str(response.url).endswith("/versions/2?notice=created")
    assert 'data-testid="version-status">draft' in response.text
    assert '<th scope="col">durable</th>' in response.text and '<th scope="col">python</th>' in response.text
    assert "max_distance_km" in response.text and 'data-testid="diff"' in response.text


async def test_the_author_cannot_publish_and_a_publisher_can(console: Console) -> None:
    await console.sign_in("author")
    await console.post(
        "/console/rulesets/channel-priority/versions",
        {"yaml": _yaml().replace("max_distance_km: 800.0", "max_distance_km: 750.0", 1)},
    )
    refused = await console.post("/console/rulesets/channel-priority/versions/2/publish")
    assert refused.status_code == 403 and "this operation needs the role &#39;publisher&#39;" in refused.text
    await console.sign_in("publisher")
    published = await console.post("/console/rulesets/channel-priority/versions/2/publish")
    assert published.status_code == 200 and "notice=published" in str(published.url)
    ruleset = (await console.api.client.as_("author").get("/v1/rulesets/channel-priority")).json()
    assert ruleset["active_version"] == 2
    listing = await console.get("/console/rulesets")
    fleet = listing.text.split('data-testid="fleet"', 1)[1].split("</table>", 1)[0]
    assert "1 alive, 0 behind" in fleet and "(current)" in fleet, fleet
    assert "channel-priority v2" in fleet and "channel-priority v1" not in fleet, fleet


async def test_the_four_eyes_rule_holds_in_the_console(console: Console) -> None:
    engine = create_engine(console.api.client.settings.database)
    try:
        key = await create_key(session_factory(engine), "author-and-publisher", ["author", "publisher"])
    finally:
        await engine.dispose()
    console.api.client.keys["both"] = key
    await console.sign_in("both")
    await console.post(
        "/console/rulesets/channel-priority/versions",
        {"yaml": _yaml().replace("max_distance_km: 800.0", "max_distance_km: 750.0", 1)},
    )
    refused = await console.post("/console/rulesets/channel-priority/versions/2/publish")
    api = await console.api.client.http.post(
        "/v1/rulesets/channel-priority/versions/2/publish", headers={"Authorization": f"Bearer {key}"}
    )
    assert refused.status_code == api.status_code == 409
    assert "four-eyes" in api.json()["errors"][0]["reason"]
    assert str(markupsafe.escape(api.json()["errors"][0]["reason"])) in refused.text


async def test_try_it_evaluates_a_version_and_shows_each_condition_with_the_value_it_read(
    console: Console,
) -> None:
    await console.sign_in("planner")
    response = await console.get(
        "/console/rulesets/channel-priority/versions/1/try",
        params={"run": "1", "order.channel": "marketplace", "order.units": "3", "order.line_count": "1"},
    )
    assert response.status_code == 200
    assert 'data-testid="rules-trace"' in response.text
    row = re.search(r'<th scope="row"><code>marketplace-from-dc-only</code>.*?</tr>', response.text, re.S)
    assert row is not None and "<strong>fired</strong>" in row.group(0)
    assert "read &#34;marketplace&#34;" in row.group(0) or 'read "marketplace"' in row.group(0)


async def test_a_bad_number_in_try_it_is_named(console: Console) -> None:
    await console.sign_in("author")
    response = await console.get(
        "/console/rulesets/channel-priority/versions/1/try", params={"run": "1", "order.units": "many"}
    )
    assert response.status_code == 422 and "order.units" in response.text


async def test_the_allocation_page_shows_every_candidate_and_why(console: Console) -> None:
    decided = await console.api.post(
        "allocation",
        {
            "order_id": "o-42",
            "channel": "ecommerce",
            "fulfillment": "ship",
            "destination": NORTH,
            "lines": [{"sku": "TEE-001", "qty": 2}],
        },
        trace="full",
    )
    decision_id = decided.json()["decision_id"]
    await console.sign_in("decide")
    page = await console.get(f"/console/decisions/{decision_id}")
    assert page.status_code == 200
    rows = {
        location: status
        for status, location in re.findall(r'<tr class="(\w+)" data-location="([\w-]+)">', page.text)
    }
    assert rows["store-leeds"] == "chosen"
    assert set(rows) == {"dc-manchester", "dc-london", "store-leeds", "store-york", "dark-camden"}
    # the log writes on the app's own loop: wait there until the decision is written, then search
    await asyncio.to_thread(console.http.blocking_portal.call, console.api.client.services.decision_log.flush)
    found = await console.get("/console/decisions", params={"order_id": "o-42"})
    assert decision_id in found.text


async def test_the_stock_page_shows_each_bucket_per_location(console: Console) -> None:
    await console.sign_in("stock")
    page = await console.get("/console/stock", params={"sku": "TEE-001"})
    assert page.status_code == 200
    york = re.search(r'data-location="store-york">(.*?)</tr>', page.text, re.S)
    assert york is not None
    assert [int(n) for n in re.findall(r">(\d+)<", york.group(1))][:6] == [8, 0, 8, 0, 2, 0]


async def test_lists_are_paginated(console: Console) -> None:
    await console.sign_in("author")
    page = await console.get("/console/rulesets", params={"page": "2"})
    assert page.status_code == 200 and "No rulesets." in page.text
    assert "Page 2" in page.text


async def test_availability_reorder_and_transfer_pages_render_their_trace_for_people(
    console: Console,
) -> None:
    made = [
        await console.api.post("availability", {"channel": "ecommerce", "skus": ["TEE-001"]}, trace="full"),
        await console.api.post(
            "reorder", {"sku": "MUG-002", "location": "dc-manchester", "daily_rate": 2.0}, trace="full"
        ),
        await console.api.post(
            "transfer",
            {
                "transfer_id": "t-1",
                "sku": "TEE-001",
                "qty": 2,
                "from_location": "store-leeds",
                "to_location": "store-york",
                "requested_by": {"id": "u-7", "role": "store_associate"},
                "reason": "size run",
            },
            trace="full",
        ),
    ]
    await console.sign_in("planner")
    for response in made:
        assert response.status_code == 200, response.text
        page = await console.get(f"/console/decisions/{response.json()['decision_id']}")
        assert page.status_code == 200
        assert 'data-testid="rules-trace"' in page.text
    reorder = await console.get(f"/console/decisions/{made[1].json()['decision_id']}")
    assert "<h2>Breakdown</h2>" in reorder.text and "reorder point" in reorder.text
    assert "<h2>Ruleset result</h2>" in page.text  # the transfer's route


async def test_the_exceptions_queue_filters_and_a_person_acknowledges_then_resolves(console: Console) -> None:
    async with console.api.client.session() as session, session.begin():
        await raise_exception(
            session,
            "negative_inventory",
            "TEE-001@store-york",
            location="store-york",
            detail={},
            now=datetime.now(UTC),
        )
        await raise_exception(
            session, "delayed_receipt", "out-9", location="store-leeds", detail={}, now=datetime.now(UTC)
        )
    await console.sign_in("stock")
    queue = await console.get("/console/exceptions", params={"kind": "negative_inventory"})
    assert "TEE-001@store-york" in queue.text and "out-9" not in queue.text
    exception_id = re.search(r'action="/console/exceptions/([^/]+)/acknowledge"', queue.text).group(1)  # type: ignore[union-attr]
    acknowledged = await console.post(
        f"/console/exceptions/{exception_id}/acknowledge", {"comment": "counting"}
    )
    assert acknowledged.status_code == 200 and "Acknowledged." in acknowledged.text
    resolved = await console.post(f"/console/exceptions/{exception_id}/resolve", {})
    assert resolved.status_code == 200
    again = await console.post(f"/console/exceptions/{exception_id}/resolve", {})
    assert again.status_code == 409  # as the API: a resolved exception cannot be resolved again
    api = await console.api.client.as_("stock").get("/v1/exceptions", params={"kind": "negative_inventory"})
    [record] = api.json()["exceptions"]
    assert (record["state"], record["resolved_by"], record["comment"]) == (
        "resolved",
        "test-stock",
        "counting",
    )


async def test_the_shadow_page_lists_only_decisions_that_evaluated_a_shadow(console: Console) -> None:
    await console.sign_in("author")
    await console.post(
        "/console/rulesets/channel-priority/versions",
        {"yaml": _yaml().replace("max_distance_km: 800.0", "max_distance_km: 750.0", 1)},
    )
    order = {
        "channel": "ecommerce",
        "fulfillment": "ship",
        "destination": NORTH,
        "lines": [{"sku": "TEE-001", "qty": 1}],
    }
    await console.api.post("allocation", {**order, "order_id": "before-shadow"})
    await console.sign_in("publisher")
    shadowed = await console.post("/console/rulesets/channel-priority/versions/2/shadow")
    assert shadowed.status_code == 200 and "Clear shadow" in shadowed.text
    await console.api.post("allocation", {**order, "order_id": "under-shadow"})
    await asyncio.to_thread(console.http.blocking_portal.call, console.api.client.services.decision_log.flush)
    page = await console.get("/console/rulesets/channel-priority/shadow")
    assert page.status_code == 200
    assert "under-shadow" in page.text and "before-shadow" not in page.text


async def test_an_unknown_decision_or_ruleset_is_a_404_page_with_the_apis_reason(console: Console) -> None:
    await console.sign_in("admin")
    decision = await console.get("/console/decisions/no-such-decision")
    assert decision.status_code == 404 and "no decision no-such-decision" in decision.text
    ruleset = await console.get("/console/rulesets/no-such-ruleset")
    assert ruleset.status_code == 404 and "no ruleset named" in ruleset.text
    assert "unsafe-inline" not in ruleset.headers["content-security-policy"]


async def test_a_draft_can_come_from_a_file(console: Console) -> None:
    await console.sign_in("author")
    text = _yaml().replace("max_distance_km: 800.0", "max_distance_km: 700.0", 1)
    response = await console.http.post(
        "/console/rulesets/channel-priority/versions",
        data={"_csrf": console.csrf, "yaml": ""},
        files={"file": ("channel-priority.yaml", text.encode(), "application/yaml")},
    )
    assert response.status_code == 200 and str(response.url).endswith("/versions/2?notice=created")
    stored = (await console.api.client.as_("author").get("/v1/rulesets/channel-priority/versions/2")).json()
    assert stored["yaml"] == text


async def test_decisions_are_found_by_kind_and_time_window(console: Console) -> None:
    made = await console.api.post("availability", {"channel": "ecommerce", "skus": ["TEE-001"]})
    await asyncio.to_thread(console.http.blocking_portal.call, console.api.client.services.decision_log.flush)
    decision_id = made.json()["decision_id"]
    await console.sign_in("planner")
    now = datetime.now(UTC)
    window = {"since": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"), "kind": "availability"}
    found = await console.get("/console/decisions", params=window)
    assert decision_id in found.text
    assert (
        decision_id
        not in (await console.get("/console/decisions", params={**window, "kind": "reorder"})).text
    )
    later = {"since": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")}
    assert decision_id not in (await console.get("/console/decisions", params=later)).text
    bad = await console.get("/console/decisions", params={"since": "yesterday"})
    assert bad.status_code == 422 and "since" in bad.text


async def test_a_dropped_candidate_says_why_in_words(console: Console) -> None:
    decided = await console.api.post(
        "allocation",
        {
            "order_id": "o-mkt",
            "channel": "marketplace",
            "fulfillment": "ship",
            "destination": NORTH,
            "lines": [{"sku": "TEE-001", "qty": 1}],
        },
        trace="full",
    )
    await console.sign_in("decide")
    page = await console.get(f"/console/decisions/{decided.json()['decision_id']}")
    york = re.search(r'data-location="store-york">.*?</tr>', page.text, re.S)
    assert york is not None and "dropped" in york.group(0)
    assert "its location type is not eligible under the policy" in york.group(0)


CANDIDATE_ROW = re.compile(
    r'<tr class="(?P<status>\w+)" data-location="(?P<location>[\w-]+)">\s*<th scope="row">[^<]*</th>'
    r"<td>(?P<type>[^<]*)</td>\s*<td[^>]*>(?P<distance>[^<]*)</td>\s*<td[^>]*>(?P<available>[^<]*)</td>"
    r"<td[^>]*>(?P<floor>[^<]*)</td><td[^>]*>(?P<giveable>[^<]*)</td>\s*<td>(?P<score>.*?)</td>\s*"
    r'<td data-testid="candidate-outcome">(?P<outcome>.*?)</td>',
    re.S,
)
TABLES = re.compile(r'<table class="candidates".*?</table>', re.S)
ORDERS = [
    {
        "channel": "ecommerce",
        "fulfillment": "ship",
        "destination": NORTH,
        "lines": [{"sku": "TEE-001", "qty": 2}],
    },
    {
        "channel": "marketplace",
        "fulfillment": "ship",
        "destination": NORTH,
        "lines": [{"sku": "TEE-001", "qty": 1}],
    },
    {
        "channel": "ecommerce",
        "fulfillment": "ship",
        "destination": NORTH,
        "lines": [{"sku": "TEE-001", "qty": 12}, {"sku": "MUG-002", "qty": 3}],
    },
    {
        "channel": "ecommerce",
        "fulfillment": "pickup",
        "pickup_location": "store-york",
        "lines": [{"sku": "TEE-001", "qty": 1}],
    },
]


def _rows(page: str) -> dict[str, dict[str, str]]:
    """The candidate table of a decision page (one line), by location."""
    return {m["location"]: m.groupdict() for m in CANDIDATE_ROW.finditer(page)}


async def test_a_default_trace_allocation_shows_every_candidate_recomputed_from_what_it_recorded(
    console: Console,
) -> None:
    await console.sign_in("decide")
    for n, order in enumerate(ORDERS):
        # the same order twice on the same stock (nothing is reserved): at the default trace and the full one
        default = (await console.api.post("allocation", {**order, "order_id": f"o-rules-{n}"})).json()
        full = (
            await console.api.post("allocation", {**order, "order_id": f"o-full-{n}"}, trace="full")
        ).json()
        assert "candidates" not in default["trace"] and "inputs" not in default
        assert default["decision"]["lines"] == full["decision"]["lines"]
        page = (await console.get(f"/console/decisions/{default['decision_id']}")).text
        full_page = (await console.get(f"/console/decisions/{full['decision_id']}")).text
        assert 'data-testid="recomputed"' in page and "Recomputed from the recorded inputs" in page
        assert 'data-testid="recomputed-note"' not in page  # nothing changed since: nothing to warn about
        assert 'data-testid="recomputed"' not in full_page
        # the recomputed table is the one the full trace records, row for row and cell for cell
        assert TABLES.findall(page) == TABLES.findall(full_page) != []
        # and it says what the decision did: per line, each candidate's status and stock as the full trace has them
        tables = TABLES.findall(page)
        for table, line, group in zip(
            tables, full["decision"]["lines"], full["trace"]["candidates"], strict=True
        ):
            rows = _rows(table)
            assert set(rows) == {c["location"] for c in group["locations"]}
            for candidate in group["locations"]:
                row = rows[candidate["location"]]
                assert row["status"] == candidate["status"]
                assert row["available"] == f"{candidate['available']:,}"
                assert row["floor"] == f"{candidate['floor']:,}"
                assert row["giveable"] == f"{candidate['giveable']:,}"
            chosen = {loc: row for loc, row in rows.items() if row["status"] == "chosen"}
            assert set(chosen) == {a["location"] for a in line["allocations"]}
            for allocation in line["allocations"]:
                assert f"{allocation['qty']:,} unit(s)" in chosen[allocation["location"]]["outcome"]


async def test_a_recomputed_table_says_when_the_locations_changed_since_the_decision(
    console: Console,
) -> None:
    decided = await console.api.post("allocation", {**ORDERS[0], "order_id": "o-moved"})
    york = {
        "id": "store-york",
        "type": "store",
        "region": "north",
        "lat": 52.0,
        "lon": -1.0815,
        "capabilities": ["pickup"],
        "priority": 2,
    }
    assert (await console.api.client.as_("stock").put("/v1/locations", json=[york])).status_code == 200
    await console.sign_in("decide")
    page = (await console.get(f"/console/decisions/{decided.json()['decision_id']}")).text
    assert 'data-testid="recomputed"' in page
    assert "The locations (master data) changed since this decision" in html.unescape(page)


async def test_an_allocation_without_a_trace_says_why_its_candidates_cannot_be_shown(
    console: Console,
) -> None:
    decided = await console.api.post("allocation", {**ORDERS[0], "order_id": "o-none"}, trace="none")
    await console.sign_in("decide")
    page = (await console.get(f"/console/decisions/{decided.json()['decision_id']}")).text
    assert 'data-testid="candidates"' not in page
    assert "asked for with trace=none" in page
