"""De-duplication of pairs being scored: identical keys in flight at once are scored once.

A request claims the keys its cache lookup missed. Keys no one else is scoring become its own (it scores
them and settles them); keys another request is already scoring come back as futures to wait on. The
futures are :class:`concurrent.futures.Future`, so a thread can block on them and an asyncio task can await
them (:meth:`Claim.wait_async`) without ever cancelling another request's work.

An owner that fails, is cancelled or forgets a key still resolves it (with :class:`InFlightAbandoned`),
so a waiter never hangs: it scores that pair itself.

Example:
    >>> registry = InFlight()
    >>> first = registry.claim(["a", "b"])
    >>> second = registry.claim(["b", "c"])
    >>> first.owned, second.owned, sorted(second.waiting)
    (('a', 'b'), ('c',), ['b'])
    >>> first.settle({"a": 1.0, "b": 2.0}); second.settle({"c": 3.0})
    >>> second.wait(timeout=1.0)
    ({'b': 2.0}, [])
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import wait as wait_futures
from typing import Any, Generic, Iterable, Mapping, TypeVar

T = TypeVar("T")


class InFlightAbandoned(RuntimeError):
    """The request scoring a pair ended without a score for it; the waiter should score it itself."""


class InFlight(Generic[T]):
    """The registry of keys being scored now, each with the future its owner will resolve. Thread-safe."""

    def __init__(self) -> None:
        self._futures: dict[str, Future[T]] = {}
        self._lock = threading.Lock()

    def claim(self, keys: Iterable[str]) -> "Claim[T]":
        """Own the keys nobody is scoring; get futures for the rest. Duplicates in ``keys`` count once."""
        owned: dict[str, Future[T]] = {}
        waiting: dict[str, Future[T]] = {}
        with self._lock:
            for key in dict.fromkeys(keys):
                current = self._futures.get(key)
                if current is None:
                    current = self._futures[key] = Future()
                    owned[key] = current
                else:
                    waiting[key] = current
        return Claim(self, owned, waiting)

    def _release(self, key: str, future: Future[T]) -> None:
        with self._lock:
            # Only the owner's own future: a later claim may have re-registered the key since.
            if self._futures.get(key) is future:
                del self._futures[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._futures)


class Claim(Generic[T]):
    """One request's share of the in-flight registry; use it as a context manager so it always settles.

    Attributes:
        owned: keys this request must score and then pass to :meth:`settle`.
        waiting: key → future for keys another request is scoring.

    Store owned scores in the cache *before* settling them: then a request arriving in between finds
    them either in flight or cached, never neither.
    """

    def __init__(self, registry: InFlight[T], owned: dict[str, Future[T]], waiting: dict[str, Future[T]]) -> None:
        self._registry = registry
        self._owned = owned
        self.owned = tuple(owned)
        self.waiting = waiting

    def settle(self, results: Mapping[str, T]) -> None:
        """Resolve the owned keys present in ``results`` (other keys are ignored) and unregister them."""
        for key in [key for key in self._owned if key in results]:
            self._resolve(key, result=results[key])

    def fail(self, exc: BaseException) -> None:
        """Resolve every owned key not yet settled with ``exc``; waiters then score those pairs themselves."""
        for key in list(self._owned):
            self._resolve(key, exc=exc)

    def _resolve(self, key: str, *, result: Any = None, exc: BaseException | None = None) -> None:
        future = self._owned.pop(key)
        # Unregister first: a waiter woken by the result must not find the key still in flight.
        self._registry._release(key, future)
        try:
            if exc is None:
                future.set_result(result)
            else:
                future.set_exception(exc)
        except InvalidStateError:
            pass  # cancelled by someone holding the future directly; nothing left to tell

    def wait(self, timeout: float | None = None) -> tuple[dict[str, T], list[str]]:
        """Block until the awaited keys resolve (or ``timeout``): their scores, and the keys to score yourself
        (owner failed or too slow)."""
        wait_futures(list(self.waiting.values()), timeout=timeout)
        return self._collect()

    async def wait_async(self, timeout: float | None = None) -> tuple[dict[str, T], list[str]]:
        """:meth:`wait` for asyncio; cancelling the awaiting task never cancels the owner's futures."""
        if self.waiting:
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            remaining = [len(self.waiting)]
            lock = threading.Lock()

            def one_done(_: Future[T]) -> None:
                with lock:
                    remaining[0] -= 1
                    last = remaining[0] == 0
                if last:
                    try:
                        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))
                    except RuntimeError:
                        pass  # the loop closed after the awaiting task gave up

            for future in self.waiting.values():
                future.add_done_callback(one_done)
            try:
                await asyncio.wait_for(done, timeout)
            except asyncio.TimeoutError:
                pass
        return self._collect()

    def _collect(self) -> tuple[dict[str, T], list[str]]:
        results: dict[str, T] = {}
        yourself: list[str] = []
        for key, future in self.waiting.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                results[key] = future.result()
            else:
                yourself.append(key)
        return results, yourself

    def __enter__(self) -> "Claim[T]":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._owned:
            self.fail(InFlightAbandoned(f"{len(self._owned)} in-flight pairs were left unscored"
                                        + (f" ({exc_type.__name__})" if exc_type else "")))
