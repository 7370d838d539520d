"""Every request in docs/decisions.md, sent in order, answers what the page shows (kind, ruleset with its
hash, decision, trace)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from service.db.engine import create_engine
from service.db.migrate import upgrade
from service.settings import DatabaseSettings
from tests.api.decisions_fixtures import decisions_api

DOC = Path(__file__).resolve().parents[2] / "docs" / "decisions.md"
EXAMPLE = re.compile(
    r"```http\nPOST /v1/decisions/(?P<path>[a-z/]+)(?:\?trace=(?P<trace>\w+))?\n```\s*"
    r"```json request\n(?P<request>.*?)\n```\s*```json response\n(?P<response>.*?)\n```",
    re.S,
)
# values that change from run to run: ids, times, hashes
VOLATILE = {"id", "expires_at"}


def examples() -> list[dict[str, Any]]:
    found = [m.groupdict() for m in EXAMPLE.finditer(DOC.read_text())]
    return [
        {
            "path": m["path"],
            "trace": m["trace"],
            "request": json.loads(m["request"]),
            "response": json.loads(m["response"]),
        }
        for m in found
    ]


def stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def test_the_page_documents_every_decision_endpoint() -> None:
    assert {e["path"] for e in examples()} == {
        "allocation",
        "availability",
        "reorder",
        "reorder/scan",
        "transfer",
        "markdown",
    }


async def test_every_documented_request_answers_the_documented_response(sqlite_url: str) -> None:
    engine = create_engine(DatabaseSettings(url=sqlite_url))
    await upgrade(engine)
    await engine.dispose()
    async with decisions_api(sqlite_url) as api:
        for example in examples():
            response = await api.post(example["path"], example["request"], trace=example["trace"])
            assert response.status_code == 200, response.text
            body = response.json()
            expected = example["response"]
            assert body["kind"] == expected["kind"]
            assert body["ruleset"] == expected["ruleset"], example["path"]
            assert stable(body["decision"]) == stable(expected["decision"]), example["path"]
            if not isinstance(expected.get("trace"), str):  # a trace the page shows further down is elided
                assert stable(body.get("trace")) == stable(expected.get("trace")), example["path"]
