"""A circuit breaker: after repeated failures, stop calling a dependency for a while, then probe it once."""

from __future__ import annotations

import threading
import time
from typing import Callable, Literal

CircuitState = Literal["closed", "open", "half_open"]
STATES: tuple[CircuitState, ...] = ("closed", "open", "half_open")


class CircuitBreaker:
    """Closed → open after ``threshold`` consecutive failures; open → half-open after ``cooldown_s``.

    While half-open exactly one caller (the probe) is let through; its success closes the circuit, its
    failure opens it for another cool-down. Thread-safe.

    Example:
        >>> now = [0.0]
        >>> b = CircuitBreaker(threshold=2, cooldown_s=1.0, clock=lambda: now[0])
        >>> b.failure(); b.failure(); b.state
        'open'
        >>> b.allow()
        False
        >>> now[0] = 1.5; b.state, b.allow(), b.allow()
        ('half_open', True, False)
        >>> b.success(); b.state
        'closed'
    """

    def __init__(self, threshold: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if threshold < 1 or cooldown_s <= 0:
            raise ValueError("a breaker needs threshold ≥ 1 and cooldown_s > 0")
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        #: How many times the circuit has opened since start.
        self.opens = 0

    @property
    def state(self) -> CircuitState:
        with self._lock:
            return self._state()

    def _state(self) -> CircuitState:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """Whether a call may go through now (while half-open: only the first caller, the probe)."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half_open" and not self._probing:
                self._probing = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._probing or (self._opened_at is None and self._failures >= self.threshold):
                self._opened_at = self._clock()
                self._probing = False
                self.opens += 1
