"""Request metrics on /metrics: every answered request counted by route and the status it answered."""

from __future__ import annotations

import re

from tests.apiclient import ApiClient


def count(text: str, method: str, path: str, status: int) -> float:
    """The value of retail_policy_requests_total for one (method, route, status), 0 when absent."""
    for line in text.splitlines():
        if line.startswith("retail_policy_requests_total{") and all(
            f'{name}="{value}"' in line
            for name, value in (("method", method), ("path", path), ("status_code", status))
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_requests_are_counted_at_once_with_the_status_they_answered(sqlite_api: ApiClient) -> None:
    before = (await sqlite_api.http.get("/metrics")).text
    assert (await sqlite_api.as_("stock").get("/v1/locations")).status_code == 200
    assert (await sqlite_api.http.get("/v1/locations")).status_code == 401  # no key
    assert (await sqlite_api.as_("stock").get("/v1/decisions/x")).status_code == 403  # wrong role
    text = (await sqlite_api.http.get("/metrics")).text
    answered = (("/v1/locations", 200), ("/v1/locations", 401), ("/v1/decisions/{decision_id}", 403))
    for path, status in answered:
        assert count(text, "GET", path, status) == count(before, "GET", path, status) + 1, (path, status)
    # the duration histogram counts the same requests, in cumulative buckets ending at +Inf
    infinite = re.search(
        r'retail_policy_request_duration_seconds_bucket\{[^}]*le="\+Inf"[^}]*path="/v1/locations"[^}]*status_code="401"[^}]*\} ([\d.e+]+)',
        text,
    ) or re.search(
        r'retail_policy_request_duration_seconds_bucket\{[^}]*path="/v1/locations"[^}]*status_code="401"[^}]*le="\+Inf"[^}]*\} ([\d.e+]+)',
        text,
    )
    assert infinite is not None and float(infinite.group(1)) >= 1
    assert "/metrics" not in "".join(
        line for line in text.splitlines() if line.startswith("retail_policy_requests_total")
    )
