"""Micro-batching: who shares a batch, how long a request waits, failures and cancelled requests."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from unimp_core.serve.batcher import MicroBatcher


def _run(coro):
    return asyncio.run(coro)


class Recorder:
    def __init__(self, delay: float = 0.0, fail_on: int | None = None):
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.delay, self.fail_on = delay, fail_on

    def __call__(self, jobs: list[int]) -> list[int]:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(jobs))
        time.sleep(self.delay)
        if self.fail_on in jobs:
            raise ValueError(f"job {self.fail_on} broke the batch")
        return [j * 10 for j in jobs]


def test_concurrent_jobs_share_batches_of_at_most_max_batch():
    rec = Recorder()

    async def main():
        with ThreadPoolExecutor(1, thread_name_prefix="model") as ex:
            b = MicroBatcher(rec, ex, max_batch=4, max_wait_s=0.2)
            b.start()
            out = await asyncio.gather(*(b.submit(i) for i in range(10)))
            await b.stop()
            return out

    assert _run(main()) == [i * 10 for i in range(10)]
    assert [len(x) for x in rec.batches] == [4, 4, 2]  # full batches leave at once, the rest after the wait
    assert sorted(j for x in rec.batches for j in x) == list(range(10))
    assert all(name.startswith("model") for name in rec.threads)  # never on the event loop


def test_a_lone_request_waits_at_most_max_wait():
    rec = Recorder()

    async def main():
        with ThreadPoolExecutor(1) as ex:
            b = MicroBatcher(rec, ex, max_batch=64, max_wait_s=0.05)
            b.start()
            t = time.perf_counter()
            out = await b.submit(7)
            waited = time.perf_counter() - t
            await b.stop()
            return out, waited

    out, waited = _run(main())
    assert out == 70 and rec.batches == [[7]] and 0.04 <= waited < 1.0


def test_max_batch_1_answers_one_by_one():
    rec = Recorder()

    async def main():
        with ThreadPoolExecutor(1) as ex:
            b = MicroBatcher(rec, ex, max_batch=1, max_wait_s=0.5)
            b.start()
            out = await asyncio.gather(*(b.submit(i) for i in range(3)))
            await b.stop()
            return out

    assert _run(main()) == [0, 10, 20] and rec.batches == [[0], [1], [2]]


def test_a_failing_batch_fails_its_jobs_only():
    rec = Recorder(fail_on=1)

    async def main():
        with ThreadPoolExecutor(1) as ex:
            b = MicroBatcher(rec, ex, max_batch=2, max_wait_s=0.2)
            b.start()
            first = await asyncio.gather(b.submit(0), b.submit(1), return_exceptions=True)
            second = await b.submit(5)  # the batcher keeps going
            await b.stop()
            return first, second

    first, second = _run(main())
    assert isinstance(first[0], ValueError) and isinstance(first[1], ValueError) and second == 50


def test_a_cancelled_request_is_dropped_before_its_batch_runs():
    rec = Recorder(delay=0.2)

    async def main():
        with ThreadPoolExecutor(1) as ex:
            b = MicroBatcher(rec, ex, max_batch=8, max_wait_s=0.0)
            b.start()
            busy = asyncio.ensure_future(b.submit(1))  # occupies the model thread for 0.2 s
            await asyncio.sleep(0.05)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(b.submit(2), 0.05)  # gives up while queued
            kept = await b.submit(3)
            await busy
            await b.stop()
            return kept

    assert _run(main()) == 30
    assert [2 in x for x in rec.batches] == [False] * len(rec.batches)


def test_submit_needs_a_started_batcher():
    async def main():
        with ThreadPoolExecutor(1) as ex:
            await MicroBatcher(Recorder(), ex, 2, 0.0).submit(1)

    with pytest.raises(RuntimeError, match="not running"):
        _run(main())
