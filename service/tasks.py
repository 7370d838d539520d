"""Stopping background tasks for sure.

On Python 3.11 `asyncio.wait_for` can swallow a cancellation that arrives just as the awaitable it waits
for completes (CPython issue gh-86296, fixed in 3.12): a polling loop built on it then goes on after
`task.cancel()`, and a plain `await task` waits forever. `cancel_and_wait` cancels again until the task
has ended.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("retail_policy.tasks")

RECANCEL_SECONDS = 0.1  # how long one cancellation is given before the next


async def cancel_and_wait(task: asyncio.Task[None] | asyncio.Future[None]) -> None:
    """Cancel `task` and return once it has ended (a failure it ended with is logged, not raised)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_SECONDS)
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %r ended with an error", task, exc_info=task.exception())
