"""The result cache a pipeline talks to: the memory tier in front of an optional Redis tier."""

from __future__ import annotations

import threading
from typing import Any, Mapping, Sequence

from rerankd.cache.entry import CachedScore
from rerankd.cache.memory import MemoryCache
from rerankd.cache.policy import DEFAULT_POLICY, CachePolicy
from rerankd.cache.redis_tier import RedisTier


class ResultCache:
    """Look pairs up before tokenizing; store the scores of the misses after scoring.

    ``lookup`` reads memory first, then asks Redis once (one ``MGET``) for what memory lacked, and copies
    Redis's hits into memory. It blocks for at most the Redis timeout, so an asyncio server should call it
    in a worker thread (``await asyncio.to_thread(cache.lookup, keys)``). ``store`` never blocks on Redis.

    Args:
        memory: the in-process LRU, or ``None`` for a Redis-only cache.
        redis: the shared tier, or ``None`` for a memory-only cache.
        warnings: things to tell the operator at start (e.g. Redis's eviction policy).

    Example:
        >>> cache = ResultCache(MemoryCache(1000))
        >>> cache.store({"k": CachedScore(2.5, False, 30)})
        >>> cache.lookup(["k", "other"])
        [CachedScore(raw=2.5, truncated=False, tokens=30), None]
        >>> cache.lookup(["k"], policy=CachePolicy(no_cache=True))
        [None]
    """

    def __init__(self, memory: MemoryCache | None = None, redis: RedisTier | None = None,
                 warnings: Sequence[str] = ()) -> None:
        if memory is None and redis is None:
            raise ValueError("a result cache needs a memory tier, a Redis tier or both")
        self.memory = memory
        self.redis = redis
        self.warnings = list(warnings)
        self.bypassed = 0
        self.unstored = 0
        self._lock = threading.Lock()

    def lookup(self, keys: Sequence[str], *, policy: CachePolicy = DEFAULT_POLICY) -> list[CachedScore | None]:
        """The cached score of each key, ``None`` for a miss (also for every key under ``no-cache``)."""
        if policy.no_cache:
            with self._lock:
                self.bypassed += len(keys)
            return [None] * len(keys)
        found: list[CachedScore | None] = [None] * len(keys)
        if self.memory is not None:
            found = self.memory.get_many(keys)
        if self.redis is None:
            return found
        missing = list(dict.fromkeys(key for key, entry in zip(keys, found) if entry is None))
        if not missing:
            return found
        from_redis = {key: entry for key, entry in zip(missing, self.redis.get_many(missing)) if entry is not None}
        if from_redis and self.memory is not None:
            self.memory.put_many(from_redis)
        return [entry if entry is not None else from_redis.get(key) for key, entry in zip(keys, found)]

    def store(self, items: Mapping[str, CachedScore], *, policy: CachePolicy = DEFAULT_POLICY) -> None:
        """Keep freshly scored pairs in every tier (nothing under ``no-store``)."""
        if policy.no_store:
            with self._lock:
                self.unstored += len(items)
            return
        if self.memory is not None:
            self.memory.put_many(items)
        if self.redis is not None:
            self.redis.put_many(items)

    def stats(self) -> dict[str, Any]:
        """Per tier (``memory``, ``redis``; absent tiers left out) its counters, plus request-level
        ``bypassed`` (keys not read under no-cache) and ``unstored`` (entries not written under no-store).

        Example:
            >>> ResultCache(MemoryCache(10)).stats()["memory"]["hits"]
            0
        """
        out: dict[str, Any] = {"bypassed": self.bypassed, "unstored": self.unstored}
        if self.memory is not None:
            out["memory"] = self.memory.stats()
        if self.redis is not None:
            out["redis"] = self.redis.stats()
        return out

    def close(self) -> None:
        """Write what the Redis tier still has queued (briefly) and stop its thread."""
        if self.redis is not None:
            self.redis.close()
