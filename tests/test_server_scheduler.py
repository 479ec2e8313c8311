"""The dynamic batcher on its own: merging, failure delivery, dropping abandoned work, draining on close."""

from __future__ import annotations

import asyncio
import threading
from typing import Sequence

import numpy as np
import pytest

from rerankd.batching import BatchLimits
from rerankd.errors import InferenceError, InputTooLargeError, OverloadedError
from rerankd.families import Encoded
from rerankd.server.scheduler import BatchScheduler


class RecordingEngine:
    """Scores a sequence as the sum of its ids; records every batch; can be held or made to fail."""

    pads = True

    def __init__(self, limits: BatchLimits = BatchLimits(max_tokens=4096, max_rows=64)) -> None:
        self.batch_limits = limits
        self.batches: list[list[tuple[int, ...]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_when: int | None = None

    def forward(self, sequences: Sequence[Encoded]) -> np.ndarray:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append([s.input_ids for s in sequences])
        if self.fail_when is not None and any(self.fail_when in s.input_ids for s in sequences):
            raise InferenceError("backend failed")
        return np.array([float(sum(s.input_ids)) for s in sequences])


class Observer:
    def __init__(self) -> None:
        self.requests_per_batch: list[int] = []
        self.dropped_total = 0

    def queue_depth(self, model: str, sequences: int) -> None:
        pass

    def batch(self, model: str, *, rows: int, tokens: int, requests: int, seconds: float) -> None:
        self.requests_per_batch.append(requests)

    def queue_wait(self, model: str, seconds: float) -> None:
        pass

    def dropped(self, model: str, sequences: int) -> None:
        self.dropped_total += sequences


def seqs(*values: int) -> list[Encoded]:
    return [Encoded((v, v)) for v in values]


def make(engine: RecordingEngine, **kw: float) -> tuple[BatchScheduler, Observer]:
    observer = Observer()
    scheduler = BatchScheduler(engine, name="m", max_wait_s=kw.get("max_wait_s", 0.02), max_queue=int(kw.get("max_queue", 100)),
                               observer=observer)
    scheduler.start()
    return scheduler, observer


def test_concurrent_requests_share_a_batch_and_get_their_own_outputs() -> None:
    engine = RecordingEngine()
    scheduler, observer = make(engine)

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(scheduler.submit(seqs(1, 2, 3)), scheduler.submit(seqs(10, 20)), scheduler.submit(seqs(7)))

    a, b, c = asyncio.run(main())
    scheduler.close()
    assert a.tolist() == [2.0, 4.0, 6.0] and b.tolist() == [20.0, 40.0] and c.tolist() == [14.0]
    assert len(engine.batches) == 1 and observer.requests_per_batch == [3]


def test_a_failed_batch_fails_every_request_in_it_and_the_worker_goes_on() -> None:
    engine = RecordingEngine()
    engine.fail_when = 99
    scheduler, _ = make(engine)

    async def main() -> list[object]:
        return await asyncio.gather(scheduler.submit(seqs(1, 99)), scheduler.submit(seqs(2)), return_exceptions=True)

    results = asyncio.run(asyncio.wait_for(main(), 10))
    assert all(isinstance(r, InferenceError) for r in results)
    assert asyncio.run(asyncio.wait_for(scheduler.submit(seqs(5)), 10)).tolist() == [10.0]
    scheduler.close()


def test_work_of_a_cancelled_request_is_dropped_before_inference() -> None:
    engine = RecordingEngine()
    engine.gate.clear()  # hold the first batch in the backend while the next requests queue up
    scheduler, observer = make(engine, max_wait_s=0.0)

    async def main() -> np.ndarray:
        first = asyncio.ensure_future(scheduler.submit(seqs(1)))
        while not engine.entered.is_set():
            await asyncio.sleep(0.005)
        gone = asyncio.ensure_future(scheduler.submit(seqs(50, 51, 52)))
        kept = asyncio.ensure_future(scheduler.submit(seqs(3)))
        await asyncio.sleep(0.02)
        gone.cancel()  # what the server does when the client disconnects
        await asyncio.sleep(0.02)
        engine.gate.set()
        await first
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await kept

    assert asyncio.run(asyncio.wait_for(main(), 10)).tolist() == [6.0]
    scheduler.close()
    ran = {ids[0] for batch in engine.batches for ids in batch}
    assert ran == {1, 3} and observer.dropped_total == 3


def test_queue_limit_answers_overloaded_and_oversized() -> None:
    engine = RecordingEngine()
    engine.gate.clear()
    scheduler, _ = make(engine, max_queue=4, max_wait_s=0.0)

    async def main() -> None:
        first = asyncio.ensure_future(scheduler.submit(seqs(1)))
        while not engine.entered.is_set():
            await asyncio.sleep(0.005)
        waiting = asyncio.ensure_future(scheduler.submit(seqs(1, 2, 3)))
        await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError, match="--max-queue"):
            await scheduler.submit(seqs(4, 5))
        with pytest.raises(InputTooLargeError, match="at most 4"):
            await scheduler.submit(seqs(1, 2, 3, 4, 5))
        engine.gate.set()
        await asyncio.gather(first, waiting)

    asyncio.run(asyncio.wait_for(main(), 10))
    scheduler.close()


def test_close_drains_queued_work() -> None:
    engine = RecordingEngine()
    scheduler, _ = make(engine, max_wait_s=0.05)

    async def main() -> np.ndarray:
        task = asyncio.ensure_future(scheduler.submit(seqs(4)))
        await asyncio.sleep(0)
        await asyncio.to_thread(scheduler.close)  # while the work is still waiting for more requests
        return await task

    assert asyncio.run(asyncio.wait_for(main(), 10)).tolist() == [8.0]
    with pytest.raises(OverloadedError, match="shutting down"):
        asyncio.run(scheduler.submit(seqs(1)))


def test_batches_respect_the_token_budget() -> None:
    engine = RecordingEngine(BatchLimits(max_tokens=8, max_rows=64))
    scheduler, _ = make(engine)

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(scheduler.submit(seqs(i, i + 1)) for i in range(0, 20, 2)))

    outs = asyncio.run(main())
    scheduler.close()
    assert [o.tolist() for o in outs] == [[2.0 * i, 2.0 * (i + 1)] for i in range(0, 20, 2)]
    assert all(len(b) * max(len(s) for s in b) <= 8 for b in engine.batches)
