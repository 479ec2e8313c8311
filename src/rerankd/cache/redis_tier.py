"""The shared tier: Redis, read with one ``MGET`` under a short timeout, written from a background queue.

Redis is an optimisation, never a dependency of a request: every error or timeout reads as a miss and is
counted; after ``breaker_threshold`` consecutive failures the tier is skipped for ``breaker_cooldown_s``
(a circuit breaker), then one call probes it. Writes never wait on Redis: they go to a bounded queue that a
daemon thread drains into pipelined ``SET key value EX ttl``; when the queue is full new writes are dropped
and counted.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Mapping, Sequence

from rerankd._optional import require
from rerankd.cache.breaker import CircuitBreaker, CircuitState
from rerankd.cache.entry import CachedScore

log = logging.getLogger("rerankd.cache")

#: Most SETs in one pipelined round trip.
WRITE_BATCH = 512


def key_prefix(namespace: str) -> str:
    """``rerankd:{namespace}:``, so several deployments (or a staging copy) can share one Redis."""
    return f"rerankd:{namespace}:"


def connect(url: str, timeout_ms: float) -> Any:
    """A redis-py client for ``url`` that gives up after ``timeout_ms`` per socket operation and never retries.

    Retries are off explicitly: a ``redis.Redis(...)`` made directly retries 3 times with back-off by default
    (redis-py 6+), which turns a 50 ms timeout against a paused Redis into 4–5 s of waiting. Build the
    client (and its tier) in the process that uses it: the writer thread does not survive a fork.
    """
    redis = require("redis")
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    seconds = timeout_ms / 1000.0
    return redis.Redis.from_url(url, socket_timeout=seconds, socket_connect_timeout=seconds,
                                retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0)


class RedisTier:
    """Cached scores in Redis, shared by every process that uses the same URL and namespace.

    Args:
        client: a redis-py client (see :func:`connect`; tests may pass a fakeredis one).
        namespace: keys are stored as ``rerankd:{namespace}:{key}``.
        ttl_s: each entry expires this many seconds after it was written.
        queue_size: writes waiting for the background thread; beyond it new writes are dropped.
        breaker_threshold: consecutive failures that open the circuit.
        breaker_cooldown_s: how long an open circuit skips Redis before one probe.

    Example:
        >>> tier = RedisTier(connect("redis://127.0.0.1:6379/0", timeout_ms=50))  # doctest: +SKIP
        >>> tier.put_many({"k": CachedScore(0.5, False, 12)}); tier.flush(1.0)  # doctest: +SKIP
        >>> tier.get_many(["k"])  # doctest: +SKIP
        [CachedScore(raw=0.5, truncated=False, tokens=12)]
    """

    def __init__(
        self,
        client: Any,
        *,
        namespace: str = "default",
        ttl_s: int = 86400,
        queue_size: int = 10000,
        breaker_threshold: int = 5,
        breaker_cooldown_s: float = 5.0,
    ) -> None:
        if ttl_s < 1 or queue_size < 1:
            raise ValueError("ttl_s and queue_size must be at least 1")
        redis = require("redis")
        # OSError too: a socket failing below redis-py must still read as a miss.
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._timeout_error = redis.TimeoutError
        self.client = client
        self.prefix = key_prefix(namespace)
        self.ttl_s = int(ttl_s)
        self.queue_size = queue_size
        self.breaker = CircuitBreaker(breaker_threshold, breaker_cooldown_s)
        self._counts = dict.fromkeys(("hits", "misses", "errors", "timeouts", "corrupt", "skipped",
                                      "written", "dropped_writes", "failed_writes"), 0)
        self._counts_lock = threading.Lock()
        self._pending: deque[tuple[str, bytes]] = deque()
        self._in_flight = 0
        self._cond = threading.Condition()
        self._closed = False
        self._writer = threading.Thread(target=self._drain, name="rerankd-cache-redis-writer", daemon=True)
        self._writer.start()

    # -- reads -----------------------------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> list[CachedScore | None]:
        """One ``MGET`` for ``keys``; on any error, timeout or open circuit every key is a miss."""
        if not keys:
            return []
        misses: list[CachedScore | None] = [None] * len(keys)
        if not self.breaker.allow():
            self._count(skipped=len(keys), misses=len(keys))
            return misses
        try:
            values = self.client.mget([self.prefix + key for key in keys])
        except self._errors as exc:
            self.breaker.failure()
            self._count(errors=1, timeouts=int(isinstance(exc, self._timeout_error)), misses=len(keys))
            log.debug("redis cache read failed (%s): %d keys read as misses", type(exc).__name__, len(keys))
            return misses
        self.breaker.success()
        out: list[CachedScore | None] = []
        corrupt = 0
        for value in values:
            entry = None
            if value is not None:
                try:
                    entry = CachedScore.from_bytes(value)
                except (ValueError, TypeError):
                    corrupt += 1  # a foreign value under our prefix: a miss, and rewritten on store
            out.append(entry)
        hits = sum(entry is not None for entry in out)
        self._count(hits=hits, misses=len(out) - hits, corrupt=corrupt)
        return out

    # -- writes ----------------------------------------------------------------------------------------

    def put_many(self, items: Mapping[str, CachedScore]) -> None:
        """Queue the entries for the writer thread; those that do not fit in the queue are dropped."""
        if not items:
            return
        with self._cond:
            room = max(self.queue_size - len(self._pending), 0) if not self._closed else 0
            taken = 0
            for key, entry in items.items():
                if taken == room:
                    break
                self._pending.append((self.prefix + key, entry.to_bytes()))
                taken += 1
            if taken:
                self._cond.notify()
        if taken < len(items):
            self._count(dropped_writes=len(items) - taken)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued write has been attempted; ``False`` if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and self._in_flight == 0, timeout)

    def _drain(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return  # closed and drained
                batch = [self._pending.popleft() for _ in range(min(WRITE_BATCH, len(self._pending)))]
                self._in_flight = len(batch)
            try:
                self._write(batch)
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()

    def _write(self, batch: list[tuple[str, bytes]]) -> None:
        if not self.breaker.allow():
            self._count(failed_writes=len(batch))
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for key, value in batch:
                pipe.set(key, value, ex=self.ttl_s)
            # raise_on_error=False: an OOM reply to some SETs (noeviction, full) fails those, not the batch.
            replies = pipe.execute(raise_on_error=False)
        except self._errors as exc:
            self.breaker.failure()
            self._count(errors=1, timeouts=int(isinstance(exc, self._timeout_error)), failed_writes=len(batch))
            log.debug("redis cache write failed (%s): %d entries lost", type(exc).__name__, len(batch))
            return
        failed = sum(isinstance(reply, Exception) for reply in replies)
        # Redis answered: the connection is healthy even if it refused some writes (e.g. OOM).
        self.breaker.success()
        self._count(written=len(batch) - failed, failed_writes=failed, errors=int(failed > 0))

    # -- the rest --------------------------------------------------------------------------------------

    def check_eviction_policy(self) -> str | None:
        """A warning when Redis's ``maxmemory-policy`` evicts nothing (``noeviction``), else ``None``.

        With ``noeviction`` a full Redis refuses every new write, so the cache silently stops learning.
        Managed Redis services often disable ``CONFIG``; then the policy cannot be checked and that is
        logged, not warned. An unreachable Redis is warned about (the server still starts: it reads as misses).
        """
        redis = require("redis")
        try:
            reply = self.client.config_get("maxmemory-policy")
        except redis.ResponseError as exc:
            log.info("cannot check Redis's maxmemory-policy (CONFIG is not allowed: %s)", exc)
            return None
        except self._errors as exc:
            message = (f"Redis cache is unreachable at start ({type(exc).__name__}: {exc}); "
                       "lookups miss until it answers")
            log.warning(message)
            return message
        policy = reply.get("maxmemory-policy", reply.get(b"maxmemory-policy"))
        if isinstance(policy, bytes):
            policy = policy.decode()
        if policy == "noeviction":
            message = ("Redis maxmemory-policy is 'noeviction': once Redis is full it refuses new cache entries "
                       "(counted as failed writes); set `maxmemory-policy allkeys-lru` for a cache")
            log.warning(message)
            return message
        return None

    @property
    def circuit(self) -> CircuitState:
        return self.breaker.state

    def queue_depth(self) -> int:
        with self._cond:
            return len(self._pending) + self._in_flight

    def _count(self, **deltas: int) -> None:
        with self._counts_lock:
            for name, delta in deltas.items():
                self._counts[name] += delta

    def stats(self) -> dict[str, Any]:
        """Counters since start (hits, misses, errors, timeouts, corrupt, skipped, written, dropped_writes,
        failed_writes), the write queue's depth, the circuit's state and how often it opened."""
        with self._counts_lock:
            out: dict[str, Any] = dict(self._counts)
        out.update(queued=self.queue_depth(), circuit=self.breaker.state, circuit_opens=self.breaker.opens)
        return out

    def close(self, timeout: float = 1.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds), stop the thread, close the connections."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            dropped = len(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        if dropped:
            self._count(dropped_writes=dropped)
        self._writer.join(timeout)
        try:
            self.client.close()
        except self._errors:
            pass
