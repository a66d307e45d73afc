"""Dynamic micro-batching: requests that arrive together are answered by one call of a batch function.

A request waits at most `max_wait_s` for others to join (none when the batch is full), so a lone
request pays little latency while a crowd shares forward passes. The batch function runs in the
given executor (the model's one thread), never on the event loop.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any, Callable, Generic, Sequence, TypeVar

J = TypeVar("J")
R = TypeVar("R")


class MicroBatcher(Generic[J, R]):
    """Gathers submitted jobs into batches of at most `max_batch` and answers each from `run_batch`.

    Args:
        run_batch: jobs -> one result per job, in order (called in `executor`). If it raises, every
            job of that batch gets the exception.
        on_batch: called with each batch's size (metrics).
    """

    def __init__(self, run_batch: Callable[[list[J]], Sequence[R]], executor: Executor, max_batch: int,
                 max_wait_s: float, on_batch: Callable[[int], Any] | None = None) -> None:
        self.run_batch, self.executor = run_batch, executor
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.on_batch = on_batch
        self._queue: asyncio.Queue[tuple[J, asyncio.Future]] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop gathering; jobs still queued get CancelledError (call after in-flight requests are done)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while not self._queue.empty():
            _, fut = self._queue.get_nowait()
            fut.cancel()

    async def submit(self, job: J) -> R:
        """The job's result, once its batch has run. Cancelling the caller drops the job if not yet run."""
        if self._task is None:
            raise RuntimeError("the batcher is not running")
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((job, fut))
        return await fut

    async def _gather(self) -> list[tuple[J, asyncio.Future]]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():  # already waiting: no reason to wait
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return [(job, fut) for job, fut in batch if not fut.done()]  # timed-out callers cancelled theirs

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch))
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, [job for job, _ in batch])
            except asyncio.CancelledError:
                for _, fut in batch:
                    fut.cancel()
                raise
            except Exception as exc:  # the batch failed: every caller hears why
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)
