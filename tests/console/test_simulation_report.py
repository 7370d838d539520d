"""The simulation report in headless Chromium: it prints on A4 without cutting a chart or a table.

The report is rendered for six runs (three version sets on two stock views) over two seeds, the widest
page the small scenario gives, and laid out as print media at the printable width of an A4 page with
12 mm margins.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.multirun import run_many
from simulators.report import render_report
from simulators.scenario import load_scenario
from simulators.simulation import Options
from simulators.versions import VersionSet, resolve
from tests.console.browser import browser

pytestmark = pytest.mark.browser
__all__ = ["browser"]  # fixture

ROOT = Path(__file__).resolve().parents[2]
RULESETS = ROOT / "tests" / "unit" / "simulators" / "rulesets"
MM = 96 / 25.4  # CSS pixels per millimetre
PRINTABLE_WIDTH = int((210 - 2 * 12) * MM)  # A4 less the report's 12 mm margins: 702 px


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scenario = load_scenario(ROOT / "simulators" / "scenarios" / "small.yaml")
    specs = [str(RULESETS / "dc-only.yaml"), str(RULESETS / "dc-only.yaml"),
             f"nearest-anywhere@{RULESETS / 'nearest-anywhere.yaml'}"]  # fmt: skip
    document = run_many(scenario, [1, 2], resolve(specs, VersionSet("defaults", {})), Options())
    assert len(document["runs"]) == 6 and "aggregate" in document
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_report(document), encoding="utf-8")
    return path


@pytest.fixture
def printed(browser: Any, report: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": PRINTABLE_WIDTH, "height": 1000})
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(report.as_uri())
    page.emulate_media(media="print")
    try:
        yield page
    finally:
        context.close()
    assert requests == [report.as_uri()], f"the report asked for more than itself: {requests}"


def test_no_chart_or_table_is_wider_than_the_printable_page(printed: Any) -> None:
    overflow = printed.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the printed page is {overflow}px wider than A4"
    boxes = printed.evaluate(
        """[...document.querySelectorAll('svg.chart, table, figure')].map(e => {
             const r = e.getBoundingClientRect();
             return {tag: e.tagName, label: e.getAttribute('aria-label') || '', left: r.left, right: r.right,
                     width: r.width, height: r.height};
           })"""
    )
    charts = [box for box in boxes if box["tag"] == "svg"]
    assert len(charts) >= 6
    for box in boxes:
        assert box["left"] >= 0 and box["right"] <= PRINTABLE_WIDTH + 0.5, box
    for chart in charts:
        assert chart["width"] >= PRINTABLE_WIDTH * 0.9, chart  # scaled to the page, not squeezed
        assert chart["height"] > 150, chart
    # every label of a chart lies inside its chart
    outside = printed.evaluate(
        """[...document.querySelectorAll('svg.chart')].flatMap(svg => {
             const box = svg.getBoundingClientRect();
             return [...svg.querySelectorAll('text')].map(t => [t.textContent, t.getBoundingClientRect()])
               .filter(([, r]) => r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5)
               .map(([text]) => text);
           })"""
    )
    assert outside == []


def test_the_report_prints_to_an_a4_pdf(printed: Any, tmp_path: Path) -> None:
    target = tmp_path / "report.pdf"
    pdf = printed.pdf(path=str(target), format="A4", prefer_css_page_size=True, print_background=True)
    assert pdf.startswith(b"%PDF-") and target.stat().st_size == len(pdf)
    pages = pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") + pdf.count(b"/Type /Page>")
    assert pages >= 3
    # A4 media box in points (595 x 842)
    assert b"/MediaBox [0 0 595" in pdf or b"/MediaBox [0 0 594" in pdf
