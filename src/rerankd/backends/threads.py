"""How many threads a CPU forward pass runs on, chosen from measured throughput.

With the cores to itself, a forward pass is fastest on every usable core. When another process
shares them, each of torch's parallel regions waits at its barrier for threads the OS has
descheduled, and the packed path's many small regions lose most: measured on 2 cores with the
machine busy (rerank-100, MiniLM shape), 4.6 pairs/s on 2 threads and 11.1 on 1. No flag or load
average says in advance which case holds, so the governor measures: it keeps a moving average of
seconds per token for each thread count it tries, runs the best one, and now and then probes
another — rarely while the probes keep losing (the interval doubles), soon again once the running
choice gets slower than it was (the machine has changed).

Scores can move in their last bits between thread counts: bit-equal on the MiniLM shape, but small
products (a 7-row linear layer, short attention) split their sums differently, and oneDNN lays out
its reordered weights for the thread count of the process at start. Jobs whose output must be
reproducible byte for byte pin the count (``Reranker.pin_threads``).

Example:
    >>> governor = ThreadGovernor(max_threads=2)
    >>> threads = governor.next_threads()
    >>> governor.record(threads, tokens=4096, seconds=0.25)
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

#: Weight of the newest batch in a thread count's moving average, for a batch of FULL_BATCH tokens
#: or more; smaller batches (a request's last, shorter one) weigh less, their fixed costs are larger.
SMOOTHING, FULL_BATCH = 0.3, 2048
#: Probe intervals, in batches: the first probe comes soon; each losing probe doubles the wait.
FIRST_PROBE, LONGEST_PROBE = 8, 256
#: The running choice this much slower than when it was chosen means the machine changed.
SLOWDOWN = 1.3


class ThreadGovernor:
    """Chooses the thread count of each batch among 1, 2, 4, ... up to ``max_threads``."""

    def __init__(self, max_threads: int) -> None:
        counts, n = [], max(1, int(max_threads))
        while n >= 1:
            counts.append(n)
            n //= 2
        self.counts: list[int] = counts  # most threads first: the quiet-machine choice
        self.cost: dict[int, float] = {}  # moving average of seconds per token
        self.best = counts[0]
        self._best_cost_when_chosen: float | None = None
        self._interval = FIRST_PROBE
        self._until_probe = FIRST_PROBE
        self._next_probe = 0
        self._lock = threading.Lock()

    def next_threads(self) -> int:
        with self._lock:
            if len(self.counts) == 1:
                return self.best
            self._until_probe -= 1
            if self._until_probe > 0:
                return self.best
            others = [c for c in self.counts if c != self.best]
            probe = others[self._next_probe % len(others)]
            self._next_probe += 1
            return probe

    def record(self, threads: int, tokens: int, seconds: float) -> None:
        if tokens <= 0 or seconds <= 0:
            return
        with self._lock:
            sample = seconds / tokens
            old = self.cost.get(threads)
            weight = SMOOTHING * min(1.0, tokens / FULL_BATCH)
            # A probed count's old average dates from its last probe, maybe another machine state:
            # the fresh sample replaces it.
            fresh = old is None or threads != self.best
            self.cost[threads] = sample if fresh else (1 - weight) * old + weight * sample
            if threads != self.best:
                self._after_probe(threads)
            elif self._best_cost_when_chosen is None:
                self._best_cost_when_chosen = self.cost[threads]
            elif self.cost[threads] > SLOWDOWN * self._best_cost_when_chosen:
                self._interval = FIRST_PROBE  # slower than it was: probe again soon
                self._until_probe = min(self._until_probe, FIRST_PROBE)
                self._best_cost_when_chosen = self.cost[threads]

    def _after_probe(self, probed: int) -> None:
        if self.cost[probed] < self.cost.get(self.best, float("inf")):
            self.best = probed
            self._best_cost_when_chosen = self.cost[probed]
            self._interval = FIRST_PROBE
        else:
            self._interval = min(2 * self._interval, LONGEST_PROBE)
        self._until_probe = self._interval

    def describe(self) -> dict[str, Any]:
        return {"threads": self.best, "thread_costs_us_per_token": {c: round(1e6 * v, 2) for c, v in sorted(self.cost.items())}}


@contextmanager
def governed(torch: Any, governor: ThreadGovernor | None, tokens: int) -> Iterator[None]:
    """Run the body on the governor's thread count, record how long it took per token, and give
    the caller's thread count back: torch's count is process-wide, and anything else in the process
    that runs torch (an application's own model, a benchmark's reference) must not inherit a probe's."""
    if governor is None:
        yield
        return
    threads = governor.next_threads()
    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        yield
        governor.record(threads, tokens, time.perf_counter() - start)
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
