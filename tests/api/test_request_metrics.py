"""Request metrics on /metrics: every answered request counted by route and the status it answered."""

from __future__ import annotations

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
    # the duration histogram counts the same requests (its buckets add up to the count)
    for path, status in answered:
        labels = f'method="GET",path="{path}",status_code="{status}"'
        buckets = [
            line for line in text.splitlines() if "_duration_seconds_bucket{" in line and labels in line
        ]
        counted = [
            line for line in text.splitlines() if "_duration_seconds_count{" in line and labels in line
        ]
        assert buckets and counted
        infinite = next(line for line in buckets if 'le="+Inf"' in line)
        total = float(counted[0].rsplit(" ", 1)[1])
        assert float(infinite.rsplit(" ", 1)[1]) == total == count(text, "GET", path, status)
        assert all(float(line.rsplit(" ", 1)[1]) <= total for line in buckets)
    assert "/metrics" not in "".join(
        line for line in text.splitlines() if line.startswith("retail_policy_requests_total")
    )
