"""docs/approvals.md, replayed in order against the real app on SQLite and PostgreSQL: every documented
request answers the documented status and body ("..." stands for ids and other values that change)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.approvals_fixtures import ApprovalsApi, approvals_api
from tests.api.test_api_guide import contains

DOC = Path(__file__).resolve().parents[2] / "docs" / "approvals.md"
EXAMPLE = re.compile(
    r"```http\n(?P<method>[A-Z]+) (?P<path>\S+)\n"
    r"Authorization: Bearer <key of (?P<who>[\w-]+): (?P<roles>[\w, ]+)>\n```\s*"
    r"(?:```json request\n(?P<request>.*?)\n```\s*)?"
    r"```json response (?P<status>\d{3})\n(?P<response>.*?)\n```",
    re.S,
)


def examples() -> list[dict[str, Any]]:
    return [m.groupdict() for m in EXAMPLE.finditer(DOC.read_text())]


async def replay(wf: ApprovalsApi, example: dict[str, Any], names: dict[str, str]) -> Any:
    """Send one documented request, `$CASE_ID` and `$SHIPMENT_ID` standing for what earlier answers gave."""

    def fill(text: str) -> str:
        for name, value in names.items():
            text = text.replace(f"${name}", value)
        return text

    roles = [role.strip() for role in example["roles"].split(",")]
    headers = await wf.person(example["who"], *roles)
    body = json.loads(fill(example["request"])) if example["request"] else None
    response = await wf.client.http.request(
        example["method"], fill(example["path"]), json=body, headers=headers
    )
    answer = response.json()
    if isinstance(answer, dict):
        case = answer.get("case") if isinstance(answer.get("case"), dict) else answer
        if isinstance(case, dict) and "steps" in case:
            names["CASE_ID"] = case["id"]
        if answer.get("shipment_id"):
            names["SHIPMENT_ID"] = answer["shipment_id"]
    return response


@pytest.fixture
async def wf(database_url: str) -> AsyncIterator[ApprovalsApi]:
    async with approvals_api(database_url) as api:
        yield api


def test_the_page_documents_every_approvals_endpoint() -> None:
    documented = {
        (e["method"], re.sub(r"\$\w+|t-\d+|m-\d+", "{id}", e["path"].split("?")[0])) for e in examples()
    }
    assert documented >= {
        ("POST", "/v1/transfers"),
        ("GET", "/v1/transfers/{id}"),
        ("POST", "/v1/markdowns"),
        ("GET", "/v1/markdowns/{id}"),
        ("GET", "/v1/approvals"),
        ("GET", "/v1/approvals/{id}"),
        ("POST", "/v1/approvals/{id}/approve"),
        ("POST", "/v1/approvals/{id}/reject"),
    }


async def test_every_documented_request_answers_the_documented_response(wf: ApprovalsApi) -> None:
    names: dict[str, str] = {}
    for example in examples():
        response = await replay(wf, example, names)
        where = f"{example['method']} {example['path']}"
        assert response.status_code == int(example["status"]), (where, response.text)
        contains(response.json(), json.loads(example["response"]), where)
