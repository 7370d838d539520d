"""Whole journeys through the console in headless Chromium, against the real service.

Run with the rest of the suite; `CONSOLE_SCREENSHOTS=1` also refreshes docs/console/*.png.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.api.decisions_fixtures import NORTH
from tests.console.browser import LiveService, browser, live_service, page, shot, sign_in, sign_out

pytestmark = pytest.mark.browser
__all__ = ["browser", "live_service", "page"]  # fixtures

RULESET = Path("rulesets/allocation/channel-priority.yaml")
UNLABELLED = """[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name)"""


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def test_a_policy_change_from_draft_to_a_decision_that_names_it(page: Any, live_service: LiveService) -> None:
    expect = _expect()
    url = live_service.url
    text = RULESET.read_text()
    # the author writes a draft with an error and sees it on its line
    sign_in(page, live_service, "author", "/console/rulesets")
    shot(page, "rulesets")
    page.get_by_role("link", name="channel-priority").click()
    page.get_by_role("link", name="New draft").click()
    broken = text.replace("when: order.units >= 1", "when: order.units >= ", 1)
    error_line = text.splitlines().index("    when: order.units >= 1") + 1
    page.get_by_label("Ruleset YAML").fill(broken)
    page.get_by_role("button", name="Save draft").click()
    marked = page.locator('[data-testid="line-error"]').first
    expect(marked).to_be_visible()
    assert marked.get_attribute("data-line") == str(error_line)
    expect(page.locator(f"#L{error_line}")).to_have_class(re.compile("has-error"))
    page.locator(f"#L{error_line}").scroll_into_view_if_needed()
    shot(page, "draft-error")
    # ... fixes it (the store floor goes from 2 to 3) and saves
    fixed = text.replace("max_distance_km: 800.0", "max_distance_km: 790.0", 1)
    page.get_by_label("Ruleset YAML").fill(fixed)
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_test_id("version-status")).to_have_text("draft")
    expect(page.get_by_test_id("validation-ok")).to_be_visible()
    version = int(re.search(r"/versions/(\d+)", page.url).group(1))  # type: ignore[union-attr]
    shot(page, "version", full_page=False)
    # the author cannot publish: no button, and the action itself is refused with the API's reason
    expect(page.get_by_role("button", name="Publish")).to_have_count(0)
    csrf = page.locator('input[name="_csrf"]').first.get_attribute("value")
    refused = page.request.post(
        f"{url}/console/rulesets/channel-priority/versions/{version}/publish", form={"_csrf": csrf}
    )
    assert refused.status == 403 and "this operation needs the role &#39;publisher&#39;" in refused.text()
    # try it: the full trace as a table
    page.get_by_role("link", name="Try it").click()
    page.get_by_label("order.channel").fill("marketplace")
    page.get_by_label("order.units").fill("3")
    page.get_by_role("button", name="Evaluate").click()
    fired = page.locator("table.trace tr.fired").first
    expect(fired).to_contain_text("marketplace-from-dc-only")
    shot(page, "try-it")
    sign_out(page)
    # a publisher publishes it
    sign_in(page, live_service, "publisher", f"/console/rulesets/channel-priority/versions/{version}")
    page.get_by_role("button", name="Publish").click()
    expect(page.get_by_role("status")).to_contain_text("Published")
    sign_out(page)
    # the next decision names the new version, and its trace page says why each store was or was not chosen
    with live_service.api("decide") as client:
        order = {
            "order_id": "journey-1",
            "channel": "ecommerce",
            "fulfillment": "ship",
            "destination": NORTH,
            "lines": [{"sku": "TEE-001", "qty": 2}],
        }
        decided = client.post("/v1/decisions/allocation", json=order).json()  # the default trace
    assert "candidates" not in decided["trace"]
    assert decided["ruleset"] == {**decided["ruleset"], "name": "channel-priority", "version": version}
    sign_in(page, live_service, "decide", f"/console/decisions/{decided['decision_id']}")
    expect(page.get_by_test_id("decision-ruleset")).to_have_text(f"channel-priority v{version}")
    expect(page.get_by_test_id("recomputed")).to_contain_text("Recomputed from the recorded inputs")
    outcomes = {
        row.get_attribute("data-location"): row.get_attribute("class")
        for row in page.locator("table.candidates tbody tr").all()
    }
    assert outcomes["store-leeds"] == "chosen"
    assert set(outcomes) == {"dc-manchester", "dc-london", "store-leeds", "store-york", "dark-camden"}
    expect(page.locator('tr[data-location="store-york"] [data-testid="candidate-outcome"]')).to_contain_text(
        "ranked lower"
    )
    shot(page, "decision")
    page.get_by_role("link", name="Stock").click()
    page.get_by_role("textbox", name="SKU").fill("TEE-001")
    page.get_by_role("button", name="Show").click()
    expect(page.locator('tr[data-location="store-york"] td').nth(0)).to_have_text("8")  # sellable
    expect(page.locator('tr[data-location="store-york"] td').nth(4)).to_have_text("2")  # return pending
    shot(page, "stock")


def test_a_planner_runs_a_small_simulation_and_reads_its_report(page: Any, live_service: LiveService) -> None:
    expect = _expect()
    sign_in(page, live_service, "planner", "/console/simulations")
    page.get_by_label("Scenario").select_option("small")
    page.get_by_role("button", name="Start").click()
    expect(page.get_by_role("status")).to_contain_text("Simulation started")
    expect(page.get_by_test_id("simulation-status")).to_have_text("done", timeout=90_000)
    report = page.frame_locator('[data-testid="report"]')
    expect(report.locator("body")).to_contain_text("fill", ignore_case=True)
    shot(page, "simulation", full_page=False)
    with page.expect_download() as download:
        page.get_by_role("link", name="Download the KPI JSON").click()
    assert download.value.suggested_filename.endswith("-kpis.json")


def test_an_approver_approves_a_routed_transfer_and_the_stock_page_shows_it_in_transit(
    page: Any, live_service: LiveService
) -> None:
    expect = _expect()
    transfer = {
        "transfer_id": "journey-t-1",
        "sku": "TV-003",
        "qty": 2,
        "from_location": "dc-manchester",
        "to_location": "store-leeds",
        "requested_by": {"id": "sam", "role": "store_associate"},
        "reason": "restock",
    }
    with live_service.api("stock") as client:
        stocked = client.put(
            "/v1/stock", json=[{"sku": "TV-003", "location": "dc-manchester", "sellable": 10}]
        )
        assert stocked.status_code == 200
    with live_service.api("requester") as client:
        filed = client.post("/v1/transfers", json=transfer)
    assert filed.status_code == 201, filed.text
    case = filed.json()["case"]
    assert case["status"] == "pending" and case["approvers"] == ["store_manager"], case
    sign_in(page, live_service, "approver", "/console/approvals")
    expect(page.locator(f'tr[data-case="{case["id"]}"]')).to_contain_text("left")
    shot(page, "approvals")
    page.get_by_role("link", name=case["subject"]).click()
    page.get_by_label("Comment (optional)").fill("restock for the weekend")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status")).to_contain_text("Approved")
    expect(page.get_by_test_id("case-status")).to_have_text(re.compile("approved|executed"))
    page.get_by_role("link", name="Stock").click()
    page.get_by_role("textbox", name="SKU").fill("TV-003")
    page.get_by_role("button", name="Show").click()
    expect(page.locator('tr[data-location="store-leeds"] [data-testid="in-transit"]')).to_have_text("2")


def test_times_are_shown_in_the_viewers_zone_with_utc_on_hover(page: Any, live_service: LiveService) -> None:
    sign_in(page, live_service, "author", "/console/rulesets")
    moment = page.locator("time").first
    assert moment.get_attribute("title", timeout=5000).endswith("UTC")  # type: ignore[union-attr]
    assert "UTC" not in moment.inner_text()


def test_pages_fit_a_tablet_and_read_without_script(browser: Any, live_service: LiveService) -> None:
    context = browser.new_context(viewport={"width": 820, "height": 1180}, java_script_enabled=False)
    try:
        tablet = context.new_page()
        sign_in(tablet, live_service, "admin", "/console/rulesets")
        for path in (
            "/console/rulesets",
            "/console/rulesets/channel-priority/versions/1",
            "/console/decisions",
            "/console/stock?sku=TEE-001",
            "/console/exceptions",
            "/console/simulations",
            "/console/rulesets/channel-priority/edit",
            "/console/rulesets/channel-priority/versions/1/try",
        ):
            tablet.goto(live_service.url + path)
            assert tablet.locator("h1").first.is_visible(), path
            overflow = tablet.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} is {overflow}px wider than a tablet"
            assert tablet.locator("time").count() == 0 or "UTC" in tablet.locator("time").first.inner_text()
            unlabelled = tablet.evaluate(UNLABELLED)
            assert unlabelled == [], f"controls without a label on {path}: {unlabelled}"
    finally:
        context.close()
