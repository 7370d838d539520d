"""Stopping a background task whose loop lost a cancellation (asyncio.wait_for on Python 3.11)."""

from __future__ import annotations

import asyncio

from service.tasks import cancel_and_wait


async def test_a_loop_that_swallowed_a_cancellation_is_cancelled_again_until_it_ends() -> None:
    swallowed = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            try:
                await asyncio.Event().wait()  # waits until cancelled
            except asyncio.CancelledError:
                if swallowed.is_set():
                    raise
                swallowed.set()  # what wait_for does when its awaitable completes as it is cancelled

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled() and swallowed.is_set() and rounds == 2


async def test_a_task_that_ended_with_an_error_is_not_raised_from() -> None:
    async def failing() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(failing())
    await asyncio.wait({task})
    await cancel_and_wait(task)
    assert isinstance(task.exception(), RuntimeError)
