"""Work handed over by concurrent requests, done a batch at a time: what arrives while one batch runs
goes in the next. A batch that fails is done again one item at a time, so that a failure is its own
item's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(eq=False)
class Batches(Generic[Item, Result]):
    run: Callable[[list[Item]], Awaitable[list[Result]]]  # one result per item, in order
    limit: int
    # items with equal keys wait for different batches (None: any items may share one)
    key: Callable[[Item], Hashable] | None = None
    _pending: list[tuple[Item, asyncio.Future[Result]]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> bool:
        """Whether items wait for the next batch."""
        return bool(self._pending)

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        return await future

    def _next(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        if self.key is None:
            batch, self._pending = self._pending[: self.limit], self._pending[self.limit :]
            return batch
        batch, rest, keys = [], [], set()
        for pending in self._pending:
            key = self.key(pending[0])
            if len(batch) < self.limit and key not in keys:
                batch.append(pending)
                keys.add(key)
            else:
                rest.append(pending)
        self._pending = rest
        return batch

    async def _drain(self) -> None:
        while self._pending:
            batch = self._next()
            try:
                results = await self.run([item for item, _ in batch])
            except asyncio.CancelledError:  # shutting down: its callers are told so
                for _item, future in batch:
                    future.cancel()
                raise
            except Exception as error:
                if len(batch) == 1:
                    _settle(batch[0][1], None, error)
                    continue
                for item, future in batch:
                    try:
                        _settle(future, (await self.run([item]))[0], None)
                    except Exception as alone:
                        _settle(future, None, alone)
                continue
            for (_item, future), result in zip(batch, results, strict=True):
                _settle(future, result, None)


def _settle(future: asyncio.Future[Any], result: Any, error: Exception | None) -> None:
    if future.done():  # its caller gave up waiting
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
