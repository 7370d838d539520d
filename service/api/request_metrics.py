"""Request metrics: `<prefix>_requests_total`, `<prefix>_request_duration_seconds`,
`<prefix>_requests_in_progress` and `<prefix>_requests_error_total` (status >= 500), labelled by method,
route template, status code and app name, the names and labels Litestar's Prometheus plugin uses.

A request adds to plain per-worker tallies; the tallies are written to the Prometheus metrics (under
`serve`, the multiprocess files every worker shares) at most `FLUSH_SECONDS` apart and whenever this
worker answers `/metrics`, so a request costs a few dictionary updates instead of a handful of metric
writes. A scrape therefore sees another worker's requests up to `FLUSH_SECONDS` late.

The app's middleware (`service.api.middleware`) tallies each request here; one that ends in an exception
is counted with the status its problem answer gets (`problems.status_of`), not as the 200 it had before
the exception.
"""

from __future__ import annotations

import asyncio
import re
from bisect import bisect_left
from typing import Any, ClassVar

from prometheus_client import Counter, Gauge, Histogram

FLUSH_SECONDS = 1.0
LABELS = ("method", "path", "status_code", "app_name")


class RequestMetrics:
    """One app's request tallies and the metrics they are written to (shared by every route's middleware).

    The metrics themselves are registered once per process (Prometheus names are process-wide), and kept
    on the class for the next app a process builds (tests build many)."""

    _registered: ClassVar[dict[str, Any]] = {}

    def __init__(self, prefix: str, app_name: str, exclude: tuple[str, ...] = ()) -> None:
        self.app_name = app_name
        self.excluded = re.compile("|".join(exclude)) if exclude else None
        self.requests = self._metric(Counter, f"{prefix}_requests_total", "Total requests")
        self.errors = self._metric(Counter, f"{prefix}_requests_error_total", "Total errors in requests")
        self.durations = self._metric(
            Histogram, f"{prefix}_request_duration_seconds", "Request duration, in seconds"
        )
        self.in_progress = self._metric(
            Gauge,
            f"{prefix}_requests_in_progress",
            "Total requests currently in progress",
            multiprocess_mode="livesum",
        )
        self.bounds: tuple[float, ...] = tuple(self.durations._upper_bounds)
        # (method, route, status) -> [count, seconds, count per duration bucket...]
        self._done: dict[tuple[str, str, int], list[float]] = {}
        # (method, route) -> requests in progress now; routes seen stay, so a gauge goes back to 0
        self._running: dict[tuple[str, str], int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def _metric(cls, kind: Any, name: str, documentation: str, **kwargs: Any) -> Any:
        found = cls._registered.get(name)
        if found is None:
            found = cls._registered[name] = kind(name, documentation, labelnames=LABELS, **kwargs)
        return found

    def started(self, method: str, route: str) -> None:
        key = (method, route)
        self._running[key] = self._running.get(key, 0) + 1

    def ended(self, method: str, route: str, status: int, seconds: float) -> None:
        self._running[(method, route)] -= 1
        key = (method, route, status)
        tally = self._done.get(key)
        if tally is None:
            tally = self._done[key] = [0.0] * (2 + len(self.bounds))
        tally[0] += 1
        tally[1] += seconds
        # the first bucket whose bound is at least `seconds`
        tally[2 + bisect_left(self.bounds, seconds)] += 1
        loop = asyncio.get_running_loop()
        if self._timer is None or self._timer_loop is not loop:
            self._timer = loop.call_later(FLUSH_SECONDS, self.flush)
            self._timer_loop = loop

    def flush(self) -> None:
        """Write what was tallied since the last flush to the metrics."""
        self._timer = None
        done, self._done = self._done, {}
        for (method, route, status), tally in done.items():
            labels = (method, route, status, self.app_name)
            self.requests.labels(*labels).inc(tally[0])
            if status >= 500:
                self.errors.labels(*labels).inc(tally[0])
            histogram = self.durations.labels(*labels)
            histogram._sum.inc(tally[1])
            # the client keeps one count per bucket (the exposition adds them up), as `observe` does
            for bucket, n in zip(histogram._buckets, tally[2:], strict=True):
                if n:
                    bucket.inc(n)
        for (method, route), running in self._running.items():
            # the in-progress gauge carries the status label at 200, as the plugin's did
            self.in_progress.labels(method, route, 200, self.app_name).set(running)
