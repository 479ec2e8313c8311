"""Cache settings (what ``rerankd serve``'s cache flags set) and the one function that builds the cache."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlparse

from rerankd.cache.memory import MemoryCache
from rerankd.cache.redis_tier import RedisTier, connect
from rerankd.cache.tiers import ResultCache
from rerankd.errors import InputError

CacheMode = Literal["off", "memory", "redis"]
_MODES = ("off", "memory", "redis")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MAX_TIMEOUT_MS = 10_000.0


@dataclass(frozen=True)
class CacheSettings:
    """How the result cache is set up; every value is checked when the settings are made.

    Attributes:
        mode: ``off`` (default), ``memory`` (in-process LRU) or ``redis`` (the LRU in front of Redis).
        size: entries in the in-process LRU (``--cache-size``); 0 with ``redis`` means Redis only.
        redis_url: ``redis://``, ``rediss://`` or ``unix://`` URL (``--redis-url``), required by ``redis``.
        ttl_s: seconds a Redis entry lives (``--cache-ttl``).
        timeout_ms: how long a Redis read may take before it counts as a miss (``--redis-timeout-ms``).
        namespace: Redis keys are ``rerankd:{namespace}:…``, so deployments can share a Redis.
        queue_size: Redis writes waiting for the background writer; more are dropped and counted.
        breaker_threshold: consecutive Redis failures that open the circuit breaker.
        breaker_cooldown_s: seconds an open circuit skips Redis before probing it again.

    Example:
        >>> CacheSettings(mode="memory", size=1000).mode
        'memory'
        >>> CacheSettings(mode="redis")
        Traceback (most recent call last):
        ...
        rerankd.errors.InputError: --cache redis needs --redis-url (e.g. redis://127.0.0.1:6379/0)
    """

    mode: CacheMode = "off"
    size: int = 100_000
    redis_url: str | None = None
    ttl_s: int = 86_400
    timeout_ms: float = 50.0
    namespace: str = "default"
    queue_size: int = 10_000
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 5.0

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise InputError(f"--cache must be one of {', '.join(_MODES)}, got {self.mode!r}")
        _integer("--cache-size", self.size, minimum=0 if self.mode == "redis" else 1)
        if self.mode == "redis":
            if not self.redis_url:
                raise InputError("--cache redis needs --redis-url (e.g. redis://127.0.0.1:6379/0)")
            scheme = urlparse(self.redis_url).scheme
            if scheme not in ("redis", "rediss", "unix"):
                raise InputError(f"--redis-url must start with redis://, rediss:// or unix://, got {self.redis_url!r}")
        elif self.redis_url:
            raise InputError(f"--redis-url is set but --cache is {self.mode!r}; add --cache redis to use Redis")
        _integer("--cache-ttl", self.ttl_s, minimum=1)
        if isinstance(self.timeout_ms, bool) or not isinstance(self.timeout_ms, (int, float)) \
                or not 0 < self.timeout_ms <= _MAX_TIMEOUT_MS:
            raise InputError(f"--redis-timeout-ms must be in (0, {_MAX_TIMEOUT_MS:g}] ms, got {self.timeout_ms!r}")
        if not isinstance(self.namespace, str) or not _NAMESPACE.match(self.namespace):
            raise InputError("the cache namespace must be 1–64 characters of letters, digits, '_', '.' or '-', "
                             f"got {self.namespace!r}")
        _integer("the cache's write queue size", self.queue_size, minimum=1)
        _integer("the circuit breaker's failure threshold", self.breaker_threshold, minimum=1)
        if isinstance(self.breaker_cooldown_s, bool) or not isinstance(self.breaker_cooldown_s, (int, float)) \
                or not self.breaker_cooldown_s > 0:
            raise InputError(f"the circuit breaker's cool-down must be > 0 s, got {self.breaker_cooldown_s!r}")


def _integer(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer ≥ {minimum}, got {value!r}")


def build_cache(settings: CacheSettings, *, redis_client: Any = None) -> ResultCache | None:
    """The cache ``settings`` describe, or ``None`` when the mode is ``off``.

    In ``redis`` mode this connects (without failing when Redis is down: lookups then miss) and checks
    Redis's eviction policy; what it finds is in the returned cache's ``warnings`` and logged.

    Args:
        settings: the checked settings.
        redis_client: a ready client to use instead of connecting to ``settings.redis_url`` (tests).

    Example:
        >>> build_cache(CacheSettings()) is None
        True
        >>> build_cache(CacheSettings(mode="memory", size=10)).memory.max_entries
        10
    """
    if settings.mode == "off":
        return None
    memory = MemoryCache(settings.size) if settings.size > 0 else None
    if settings.mode == "memory":
        return ResultCache(memory)
    assert settings.redis_url is not None  # checked in CacheSettings
    client = redis_client if redis_client is not None else connect(settings.redis_url, settings.timeout_ms)
    tier = RedisTier(client, namespace=settings.namespace, ttl_s=settings.ttl_s, queue_size=settings.queue_size,
                     breaker_threshold=settings.breaker_threshold, breaker_cooldown_s=settings.breaker_cooldown_s)
    warning = tier.check_eviction_policy()
    return ResultCache(memory, tier, warnings=[warning] if warning else [])
