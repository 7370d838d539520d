"""docs/api.md, replayed step by step against the real app: every documented answer must hold."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from service.demo import LOCATIONS
from tests.apiclient import ApiClient

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "api.md"
STEP = re.compile(r"```sh\n(?P<cmd>curl .*?)\n```\n```json\n(?P<answer>.*?)\n```", re.S)
CURL = re.compile(r"-X (?P<method>[A-Z]+) '?http://127\.0\.0\.1:8000(?P<path>[^' ]+)'?")
BODY = re.compile(r"-d '(?P<body>.*)'", re.S)


def steps() -> list[tuple[str, str, Any, Any]]:
    found = []
    for match in STEP.finditer(GUIDE.read_text()):
        command = match.group("cmd")
        curl = CURL.search(command)
        assert curl, f"unreadable curl line: {command}"
        body = BODY.search(command)
        found.append(
            (
                curl.group("method"),
                curl.group("path"),
                json.loads(body.group("body")) if body else None,
                json.loads(match.group("answer")),
            )
        )
    return found


def contains(actual: Any, expected: Any, where: str = "$") -> None:
    """`expected` is a part of `actual`: "..." matches anything, dicts by their listed keys, lists item by item."""
    if expected == "...":
        return
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{where}.{key} missing in {actual!r}"
            contains(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), (
            f"{where}: {actual!r} != {expected!r}"
        )
        for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
            contains(got, want, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def test_the_guide_has_the_steps_it_promises() -> None:
    methods_paths = [(method, path.split("?")[0]) for method, path, _, _ in steps()]
    assert ("PUT", "/v1/stock") in methods_paths
    assert ("POST", "/v1/reservations") in methods_paths
    assert ("POST", "/v1/reservations/$RESERVATION_ID/commit") in methods_paths


async def test_every_step_of_the_guide_answers_as_documented(sqlite_api: ApiClient) -> None:
    admin = sqlite_api.as_("admin")
    assert (await admin.put("/v1/locations", json=LOCATIONS)).status_code == 200
    reservation_id = None
    for method, path, body, answer in steps():
        if "$RESERVATION_ID" in path:
            assert reservation_id, "the guide commits before it reserves"
            path = path.replace("$RESERVATION_ID", reservation_id)
        send = getattr(admin, method.lower())
        response = await (send(path, json=body) if body is not None else send(path))
        assert response.status_code < 500, response.text
        contains(response.json(), answer, f"{method} {path}")
        if method == "POST" and path == "/v1/reservations" and response.status_code == 201:
            reservation_id = response.json()["id"]
