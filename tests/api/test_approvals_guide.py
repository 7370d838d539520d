"""docs/approvals.md, the sections "Webhooks", "Exceptions" and "Insights and audit": every curl step is
replayed in order against the real app and must answer as documented, and the signature check given to
receivers accepts what the dispatcher signs and refuses anything else."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from typing import Any

from service.workflow.subscriptions import sign
from tests.api.test_api_guide import contains
from tests.api.workflow_fixtures import workflow_api
from tests.apiclient import ApiClient

__all__ = ["workflow_api"]

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "approvals.md"
SECTIONS = ("Webhooks", "Exceptions", "Insights and audit")
STEP = re.compile(r"```sh\n(?P<cmd>curl .*?)\n```\n```json\n(?P<answer>.*?)\n```", re.S)
CURL = re.compile(r"-X (?P<method>[A-Z]+) ['\"]?http://127\.0\.0\.1:8000(?P<path>[^'\" ]+)['\"]?")
BODY = re.compile(r"-d '(?P<body>.*)'", re.S)
PYTHON = re.compile(r"```python\n(?P<code>.*?)\n```", re.S)


def sections() -> str:
    """The text of this branch's sections of the guide, in order."""
    parts = re.split(r"^## ", GUIDE.read_text(), flags=re.M)
    found = {part.split("\n", 1)[0].strip(): part for part in parts[1:]}
    assert set(SECTIONS) <= set(found), f"docs/approvals.md lacks a section of {SECTIONS}"
    return "\n".join(found[name] for name in SECTIONS)


def steps() -> list[tuple[str, str, Any, Any]]:
    found = []
    for match in STEP.finditer(sections()):
        curl = CURL.search(match.group("cmd"))
        assert curl, f"unreadable curl line: {match.group('cmd')}"
        body = BODY.search(match.group("cmd"))
        found.append(
            (
                curl.group("method"),
                curl.group("path"),
                json.loads(body.group("body")) if body else None,
                json.loads(match.group("answer")),
            )
        )
    return found


async def test_every_step_of_the_workflow_guide_answers_as_documented(workflow_api: ApiClient) -> None:
    admin = workflow_api.as_("admin")
    exception_id = None
    replayed = []
    for method, path, body, answer in steps():
        if "$EXCEPTION_ID" in path:
            assert exception_id, "the guide uses an exception before it lists one"
            path = path.replace("$EXCEPTION_ID", exception_id)
        send = getattr(admin, method.lower())
        response = await (send(path, json=body) if body is not None else send(path))
        assert response.status_code < 300, f"{method} {path}: {response.text}"
        contains(response.json(), answer, f"{method} {path}")
        if path.startswith("/v1/exceptions?") and response.json()["exceptions"]:
            exception_id = response.json()["exceptions"][0]["id"]
        replayed.append((method, path.split("?")[0]))
    assert ("PUT", "/v1/subscriptions") in replayed
    assert ("POST", f"/v1/exceptions/{exception_id}/acknowledge") in replayed
    assert ("GET", "/v1/audit") in replayed


def test_the_documented_signature_check_accepts_the_dispatchers_signature_only() -> None:
    [snippet] = [match.group("code") for match in PYTHON.finditer(sections())]
    scope: dict[str, Any] = {}
    exec(snippet, scope)  # the receiver's code, exactly as documented
    verify = scope["verify"]
    secret, event_id, body = "whsec-0123456789abcdef", "0190f7c1-7d3e", b'{"id":"0190f7c1-7d3e"}'
    now = int(time.time())
    headers = {
        "X-Retail-Policy-Timestamp": str(now),
        "X-Retail-Policy-Event-Id": event_id,
        "X-Retail-Policy-Signature": sign(secret, now, event_id, body),
    }
    assert verify(secret, headers, body)
    assert not verify("another-secret-of-16", headers, body)
    assert not verify(secret, headers, body + b" ")
    assert not verify(secret, {**headers, "X-Retail-Policy-Event-Id": "0190f7c1-0000"}, body)
    stale = now - 3600
    old = {**headers, "X-Retail-Policy-Timestamp": str(stale)}
    old["X-Retail-Policy-Signature"] = sign(secret, stale, event_id, body)
    assert not verify(secret, old, body)
    expected = hmac.new(secret.encode(), f"{now}.{event_id}.".encode() + body, hashlib.sha256).hexdigest()
    assert headers["X-Retail-Policy-Signature"] == f"sha256={expected}"
