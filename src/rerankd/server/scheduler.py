"""The dynamic batcher: sequences of concurrent requests share padding-aware batches on one worker thread.

Requests are tokenized off the event loop, then :meth:`BatchScheduler.submit` puts their sequences into
one queue per model. A single inference thread per model takes the oldest waiting sequence, plans
cost-sorted token-budget batches over the waiting window (:func:`rerankd.batching.plan_batches`, padding
charged only to padded backends, so pairs of different requests of similar length share a batch),
runs the batch that holds the oldest sequence through :meth:`rerankd.pipeline.Pipeline.forward`, and
hands each request its outputs through its event loop.

Guarantees the server relies on:

* a batch that raises fails every request in it with that error, and the rest of those requests'
  sequences are dropped: no caller ever hangs; out of device memory, the pipeline splits the batch
  itself, and only the request owning a sequence that does not fit alone fails (413);
* a request whose awaiting task was cancelled (its client disconnected) has its sequences dropped
  before inference;
* :meth:`close` lets the worker finish what is queued before it exits (graceful shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from rerankd.batching import batch_cost, plan_batches
from rerankd.errors import InputTooLargeError, OverloadedError
from rerankd.families import Encoded
from rerankd.gpu_memory import SequenceTooLargeError

log = logging.getLogger("rerankd.server")

#: How many budgets' worth of waiting tokens one planning round looks at: enough to group similar
#: lengths across requests, small enough that planning stays cheap next to a forward pass.
PLAN_WINDOW_BUDGETS = 4


class Engine(Protocol):
    """What the scheduler needs of a :class:`rerankd.pipeline.Pipeline`."""

    batch_limits: Any
    pads: bool

    def forward(self, sequences: Sequence[Encoded]) -> np.ndarray: ...


class BatchObserver(Protocol):
    """Receives what the scheduler measures (the server's metrics implement it)."""

    def queue_depth(self, model: str, sequences: int) -> None: ...

    def batch(self, model: str, *, rows: int, tokens: int, requests: int, seconds: float) -> None: ...

    def queue_wait(self, model: str, seconds: float) -> None: ...

    def dropped(self, model: str, sequences: int) -> None: ...


@dataclass(eq=False)
class _Job:
    """One request's sequences; only the worker thread writes ``outputs``/``remaining``/``failed``."""

    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop
    size: int
    remaining: int
    submitted: float
    outputs: np.ndarray | None = None
    failed: bool = False
    dispatched: bool = False
    # Set from the event loop when the awaiting task goes away; read by the worker (a bool is atomic).
    abandoned: bool = False

    @property
    def alive(self) -> bool:
        return not (self.failed or self.abandoned)


@dataclass(eq=False)
class _Item:
    job: _Job
    position: int
    sequence: Encoded
    enqueued: float = field(default_factory=time.monotonic)


class BatchScheduler:
    """One model's queue and its inference worker thread.

    Example:
        >>> scheduler = BatchScheduler(reranker, name="m", max_wait_s=0.002, max_queue=4096)  # doctest: +SKIP
        >>> scheduler.start()                                                                 # doctest: +SKIP
        >>> outputs = await scheduler.submit(prepared.sequences)                              # doctest: +SKIP
    """

    def __init__(
        self,
        engine: Engine,
        *,
        name: str,
        max_wait_s: float,
        max_queue: int,
        observer: BatchObserver | None = None,
    ) -> None:
        self.engine = engine
        self.name = name
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.observer = observer
        self._pending: deque[_Item] = deque()
        self._queued_tokens = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"rerankd-infer-{name}", daemon=True)

    # -- event-loop side ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    async def submit(self, sequences: Sequence[Encoded]) -> np.ndarray:
        """Queue one request's sequences and wait for their outputs (in the order given)."""
        if not sequences:
            return np.zeros((0,), dtype=np.float64)
        loop = asyncio.get_running_loop()
        job = _Job(future=loop.create_future(), loop=loop, size=len(sequences), remaining=len(sequences),
                   submitted=time.monotonic())
        job.future.add_done_callback(lambda f: setattr(job, "abandoned", job.abandoned or f.cancelled()))
        with self._cond:
            if self._closing:
                raise OverloadedError("the server is shutting down; retry on another instance")
            if len(sequences) > self.max_queue:
                raise InputTooLargeError(
                    f"the request has {len(sequences)} sequences but the queue holds at most {self.max_queue} "
                    "(--max-queue); split the request"
                )
            if len(self._pending) + len(sequences) > self.max_queue:
                raise OverloadedError(
                    f"the server is busy: {len(self._pending)} sequences are queued and the limit is "
                    f"{self.max_queue} (--max-queue); retry shortly"
                )
            now = time.monotonic()
            for position, sequence in enumerate(sequences):
                self._pending.append(_Item(job, position, sequence, now))
            self._queued_tokens += sum(s.planned_cost for s in sequences)
            self._report_depth()
            self._cond.notify()
        return await job.future

    def close(self, timeout: float | None = None) -> None:
        """Stop taking work, let the worker finish what is queued, and wait for it."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- worker side ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                items = self._next_batch()
                if items is None:
                    return
            if not items:
                continue
            try:
                self._execute(items)
            except Exception as exc:  # noqa: BLE001 - a bug here must not strand the callers of this batch
                log.exception("the inference worker of model %s failed outside the backend", self.name)
                for job in dict.fromkeys(item.job for item in items):
                    job.failed = True
                    _call_in_loop(job.loop, _fail, job.future, exc)

    def _next_batch(self) -> list[_Item] | None:
        """Wait for work and take one batch (called with the lock held); None when closed and drained."""
        while True:
            self._drop_dead()
            if not self._pending:
                if self._closing:
                    return None
                self._cond.wait()
                continue
            # Give concurrent requests a moment to arrive and share this batch, unless it is full already.
            remaining = self._pending[0].enqueued + self.max_wait_s - time.monotonic()
            if remaining > 0 and not self._closing and self._queued_tokens < self.engine.batch_limits.max_tokens:
                self._cond.wait(remaining)
                continue
            return self._take_batch()

    def _drop_dead(self) -> None:
        if not any(not item.job.alive for item in self._pending):
            return
        kept = deque(item for item in self._pending if item.job.alive)
        dropped = len(self._pending) - len(kept)
        self._pending = kept
        self._queued_tokens = sum(item.sequence.planned_cost for item in kept)
        if self.observer and dropped:
            self.observer.dropped(self.name, dropped)
        self._report_depth()

    def _take_batch(self) -> list[_Item]:
        limits = self.engine.batch_limits
        window: list[_Item] = []
        tokens = 0
        for item in self._pending:
            if window and tokens >= PLAN_WINDOW_BUDGETS * limits.max_tokens:
                break
            window.append(item)
            tokens += item.sequence.planned_cost
        # The batch that holds the oldest sequence runs first, so requests finish roughly in arrival order.
        costs = [i.sequence.planned_cost for i in window]
        batch_rows = next(rows for rows in plan_batches(costs, limits, padded=self.engine.pads) if 0 in rows)
        chosen = {id(window[r]) for r in batch_rows}
        items = [window[r] for r in batch_rows]
        self._pending = deque(item for item in self._pending if id(item) not in chosen)
        self._queued_tokens -= sum(item.sequence.planned_cost for item in items)
        self._report_depth()
        return items

    def _execute(self, items: list[_Item]) -> None:
        jobs = list(dict.fromkeys(item.job for item in items))
        start = time.monotonic()
        for job in jobs:
            if not job.dispatched:
                job.dispatched = True
                if self.observer:
                    self.observer.queue_wait(self.name, start - job.submitted)
        try:
            out = self.engine.forward([item.sequence for item in items])
        except SequenceTooLargeError as exc:
            # Only the request owning the sequence that does not fit fails; the others are run again.
            culprit = items[exc.position].job
            culprit.failed = True
            _call_in_loop(culprit.loop, _fail, culprit.future, SequenceTooLargeError(
                f"sequence {items[exc.position].position} of the request: {exc}", exc.position, exc.tokens))
            rest = [item for item in items if item.job is not culprit]
            if rest:
                self._execute(rest)
            return
        except BaseException as exc:  # noqa: BLE001 - whatever happens, every caller in the batch must hear
            log.warning("batch of %d sequences from %d requests failed on model %s: %r", len(items), len(jobs), self.name, exc)
            for job in jobs:
                job.failed = True
                _call_in_loop(job.loop, _fail, job.future, exc)
            return
        if self.observer:
            charged = batch_cost([len(item.sequence) for item in items], padded=self.engine.pads)
            self.observer.batch(self.name, rows=len(items), tokens=charged, requests=len(jobs),
                                seconds=time.monotonic() - start)
        for row, item in enumerate(items):
            job = item.job
            if job.outputs is None:
                job.outputs = np.empty((job.size,) + out.shape[1:], dtype=out.dtype)
            job.outputs[item.position] = out[row]
            job.remaining -= 1
            if job.remaining == 0 and job.alive:
                _call_in_loop(job.loop, _resolve, job.future, job.outputs)

    def _report_depth(self) -> None:
        if self.observer:
            self.observer.queue_depth(self.name, len(self._pending))


def _resolve(future: asyncio.Future[np.ndarray], value: np.ndarray) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[np.ndarray], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _call_in_loop(loop: asyncio.AbstractEventLoop, fn: Any, *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass
