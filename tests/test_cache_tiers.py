"""Unit tests of the cache's tiers, breaker, policy, in-flight registry, settings and metrics.

Redis here is fakeredis or a deliberately failing client; tests/test_cache_redis.py runs a real redis-server.
"""

from __future__ import annotations

import asyncio
import doctest
import importlib
import threading
import time
from typing import Any

import pytest

from rerankd.cache import (CachedScore, CachePolicy, CacheSettings, CircuitBreaker, InFlight, InFlightAbandoned,
                           MemoryCache, RedisTier, ResultCache, build_cache, key_prefix)
from rerankd.errors import InputError

redis = pytest.importorskip("redis", reason="the redis tier needs redis-py: pip install 'rerankd[cache]'")


def score(i: int) -> CachedScore:
    return CachedScore(raw=i / 7.0, truncated=i % 2 == 1, tokens=i)


@pytest.fixture
def fake() -> Any:
    fakeredis = pytest.importorskip("fakeredis", reason="unit tests of the Redis tier use fakeredis (test extra)")
    return fakeredis.FakeRedis()


@pytest.mark.parametrize("module", ["keys", "entry", "memory", "breaker", "policy", "tiers", "inflight", "config",
                                    "metrics"])
def test_docstring_examples(module: str) -> None:
    mod = importlib.import_module(f"rerankd.cache.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


# -- memory tier -------------------------------------------------------------------------------------

def test_memory_lru_bound_and_stats() -> None:
    cache = MemoryCache(3)
    cache.put_many({f"k{i}": score(i) for i in range(3)})
    assert cache.get_many(["k0"]) == [score(0)]             # k0 is now the most recent
    cache.put_many({"k3": score(3), "k4": score(4)})       # evicts k1 then k2
    assert cache.get_many(["k0", "k1", "k2", "k3", "k4"]) == [score(0), None, None, score(3), score(4)]
    cache.put_many({"k0": score(9)})                       # refresh replaces the value
    assert cache.get_many(["k0"]) == [score(9)]
    assert cache.stats() == {"hits": 5, "misses": 2, "evictions": 2, "entries": 3, "capacity": 3}
    with pytest.raises(ValueError):
        MemoryCache(0)


def test_memory_is_thread_safe_and_stays_bounded() -> None:
    cache = MemoryCache(500)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(2000):
                key = f"k{(i * 7 + seed) % 1500}"
                cache.put_many({key: score(i)})
                cache.get_many([key, f"k{i % 1500}"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = cache.stats()
    assert not errors and len(cache) == 500 and stats["hits"] + stats["misses"] == 4 * 2000 * 2


# -- breaker and policy ------------------------------------------------------------------------------

def test_breaker_needs_consecutive_failures_and_probes_once() -> None:
    now = [100.0]
    breaker = CircuitBreaker(threshold=3, cooldown_s=2.0, clock=lambda: now[0])
    for outcome in ("failure", "failure", "success", "failure", "failure"):   # never 3 in a row
        getattr(breaker, outcome)()
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow() and breaker.opens == 1
    now[0] += 1.9
    assert breaker.state == "open"
    now[0] += 0.2
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()          # one probe only
    breaker.failure()                                        # probe failed: open again, for a new cool-down
    assert breaker.state == "open" and breaker.opens == 2
    now[0] += 2.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


@pytest.mark.parametrize(("header", "no_cache", "no_store"), [
    (None, False, False), ("", False, False), ("no-cache", True, False), ("NO-STORE", False, True),
    ("max-age=0, no-cache, no-store", True, True), ("no-cache=\"set-cookie\"", True, False),
    ("no-transform", False, False), ("private", False, False),
])
def test_cache_control(header: str | None, no_cache: bool, no_store: bool) -> None:
    assert CachePolicy.from_cache_control(header) == CachePolicy(no_cache=no_cache, no_store=no_store)


# -- result cache, memory only -----------------------------------------------------------------------

def test_result_cache_memory_policies() -> None:
    cache = ResultCache(MemoryCache(100))
    cache.store({"a": score(1)}, policy=CachePolicy(no_store=True))
    assert cache.lookup(["a"]) == [None]
    cache.store({"a": score(1)}, policy=CachePolicy(no_cache=True))   # no-cache still writes
    assert cache.lookup(["a"], policy=CachePolicy(no_cache=True)) == [None]
    assert cache.lookup(["a", "a", "b"], policy=CachePolicy(no_store=True)) == [score(1), score(1), None]
    stats = cache.stats()
    assert stats["bypassed"] == 1 and stats["unstored"] == 1 and "redis" not in stats
    assert stats["memory"]["hits"] == 2 and stats["memory"]["misses"] == 2
    with pytest.raises(ValueError):
        ResultCache(None, None)


# -- result cache with a (fake) Redis tier -----------------------------------------------------------

class CountingClient:
    """Wraps a client, counting MGET calls and their keys."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.mgets: list[list[str]] = []

    def mget(self, keys: list[str]) -> Any:
        self.mgets.append(list(keys))
        return self.inner.mget(keys)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_memory_in_front_of_redis(fake: Any) -> None:
    client = CountingClient(fake)
    writer = ResultCache(None, RedisTier(fake, namespace="t1", ttl_s=60))
    reader = ResultCache(MemoryCache(100), RedisTier(client, namespace="t1", ttl_s=60))
    try:
        writer.store({"a": score(1), "b": score(2)})
        assert writer.redis.flush(2.0)
        assert sorted(fake.keys("*")) == [b"rerankd:t1:a", b"rerankd:t1:b"]
        assert 0 < fake.ttl("rerankd:t1:a") <= 60
        # Memory misses all; one MGET for the distinct misses; Redis's hits are copied into memory.
        assert reader.lookup(["a", "x", "a", "b"]) == [score(1), None, score(1), score(2)]
        assert client.mgets == [["rerankd:t1:a", "rerankd:t1:x", "rerankd:t1:b"]]
        assert reader.lookup(["a", "b"]) == [score(1), score(2)]
        assert len(client.mgets) == 1                      # served from memory, Redis not asked
        assert reader.lookup(["x"]) == [None] and len(client.mgets) == 2
        stats = reader.stats()
        assert stats["memory"]["hits"] == 2 and stats["memory"]["misses"] == 5
        assert stats["redis"]["hits"] == 2 and stats["redis"]["misses"] == 2 and stats["redis"]["circuit"] == "closed"
        # Another namespace shares nothing.
        other = RedisTier(fake, namespace="t2")
        assert other.get_many(["a"]) == [None]
        other.close()
    finally:
        writer.close()
        reader.close()


def test_corrupt_value_is_a_counted_miss(fake: Any) -> None:
    tier = RedisTier(fake, namespace="c")
    fake.set(key_prefix("c") + "k", b"not a score")
    assert tier.get_many(["k"]) == [None]
    assert tier.stats()["corrupt"] == 1 and tier.stats()["misses"] == 1
    tier.close()


class FailingClient:
    """A Redis that always fails, the way a dead server does; counts the calls that reached it."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.calls = 0

    def mget(self, keys: list[str]) -> Any:
        self.calls += 1
        raise self.exc

    def pipeline(self, transaction: bool = True) -> Any:
        self.calls += 1
        raise self.exc

    def config_get(self, name: str) -> Any:
        raise self.exc

    def close(self) -> None:
        pass


@pytest.mark.parametrize("exc", [redis.ConnectionError("refused"), redis.TimeoutError("timed out"),
                                 ConnectionResetError("reset")])
def test_redis_errors_are_misses_and_open_the_circuit(exc: BaseException) -> None:
    client = FailingClient(exc)
    tier = RedisTier(client, breaker_threshold=3, breaker_cooldown_s=60)
    cache = ResultCache(MemoryCache(10), tier)
    try:
        for _ in range(5):
            assert cache.lookup(["a", "b"]) == [None, None]
        assert client.calls == 3                      # then the open circuit skips Redis
        stats = cache.stats()["redis"]
        assert stats["errors"] == 3 and stats["circuit"] == "open" and stats["circuit_opens"] == 1
        assert stats["skipped"] == 4 and stats["misses"] == 10
        assert stats["timeouts"] == (3 if isinstance(exc, redis.TimeoutError) else 0)
        cache.store({"a": score(1)})                  # never raises, even with Redis down
        assert tier.flush(2.0) and tier.stats()["failed_writes"] == 1
        assert cache.lookup(["a"]) == [score(1)]      # memory still serves
        assert "unreachable" in (tier.check_eviction_policy() or "")
    finally:
        cache.close()


def test_write_queue_drops_when_full(fake: Any) -> None:
    release, entered = threading.Event(), threading.Event()

    class SlowPipeline:
        def __init__(self) -> None:
            self.inner = fake.pipeline(transaction=False)

        def set(self, *args: Any, **kwargs: Any) -> None:
            self.inner.set(*args, **kwargs)

        def execute(self, raise_on_error: bool = True) -> Any:
            entered.set()
            release.wait(5)
            return self.inner.execute(raise_on_error=raise_on_error)

    class SlowClient(CountingClient):
        def pipeline(self, transaction: bool = True) -> Any:
            return SlowPipeline()

    tier = RedisTier(SlowClient(fake), queue_size=10)
    try:
        tier.put_many({"first": score(0)})
        assert entered.wait(2.0)                      # the writer took "first" and blocks on Redis
        started = time.perf_counter()
        tier.put_many({f"k{i}": score(i) for i in range(25)})
        assert time.perf_counter() - started < 0.05   # writes never wait on Redis
        assert tier.stats()["dropped_writes"] == 15 and tier.stats()["queued"] == 11
        release.set()
        assert tier.flush(2.0)
        assert tier.stats()["written"] == 11 and tier.get_many(["k9", "k10"]) == [score(9), None]
    finally:
        release.set()
        tier.close()


def test_oom_replies_fail_writes_without_raising(fake: Any) -> None:
    class OomPipeline:
        def __init__(self) -> None:
            self.n = 0

        def set(self, *args: Any, **kwargs: Any) -> None:
            self.n += 1

        def execute(self, raise_on_error: bool = True) -> Any:
            return [True] + [redis.ResponseError("OOM command not allowed")] * (self.n - 1)

    class OomClient(CountingClient):
        def pipeline(self, transaction: bool = True) -> Any:
            return OomPipeline()

    tier = RedisTier(OomClient(fake))
    tier.put_many({f"k{i}": score(i) for i in range(4)})
    assert tier.flush(2.0)
    stats = tier.stats()
    assert stats["written"] == 1 and stats["failed_writes"] == 3 and stats["circuit"] == "closed"
    tier.close()


def test_eviction_policy_check_without_config(fake: Any, caplog: pytest.LogCaptureFixture) -> None:
    # fakeredis answers CONFIG GET like a managed Redis that disabled CONFIG: an error reply.
    tier = RedisTier(fake)
    with caplog.at_level("INFO", logger="rerankd.cache"):
        assert tier.check_eviction_policy() is None
    assert "cannot check" in caplog.text
    tier.close()

    class NoEviction(CountingClient):
        def config_get(self, name: str) -> dict[str, str]:
            return {"maxmemory-policy": "noeviction"}

    tier = RedisTier(NoEviction(fake))
    assert "noeviction" in (tier.check_eviction_policy() or "")
    tier.close()


# -- in-flight de-duplication ------------------------------------------------------------------------

def test_inflight_threads_score_each_key_once() -> None:
    registry: InFlight[CachedScore] = InFlight()
    scored: list[str] = []
    barrier = threading.Barrier(4)
    results: dict[int, dict[str, CachedScore]] = {}
    lock = threading.Lock()

    def request(n: int) -> None:
        barrier.wait()
        keys = ["shared", f"own{n}"]
        with registry.claim(keys) as claim:
            time.sleep(0.05)                          # "scoring": the others arrive meanwhile
            mine = {key: score(len(key)) for key in claim.owned}
            with lock:
                scored.extend(claim.owned)
            claim.settle(mine)
            theirs, yourself = claim.wait(timeout=2.0)
        assert not yourself
        results[n] = {**mine, **theirs}

    threads = [threading.Thread(target=request, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(scored) == ["own0", "own1", "own2", "own3", "shared"]
    assert all(r["shared"] == score(6) for r in results.values()) and len(registry) == 0


def test_inflight_owner_failure_never_hangs_waiters() -> None:
    registry: InFlight[float] = InFlight()
    owner = registry.claim(["a", "b"])
    waiter = registry.claim(["a", "b", "c"])
    assert waiter.owned == ("c",)
    with pytest.raises(RuntimeError):
        with owner:
            owner.settle({"a": 1.0})
            raise RuntimeError("the backend failed")   # "b" is left unscored
    theirs, yourself = waiter.wait(timeout=1.0)
    assert theirs == {"a": 1.0} and yourself == ["b"]
    assert isinstance(waiter.waiting["b"].exception(), InFlightAbandoned)
    assert registry.claim(["b"]).owned == ("b",)          # released: the next request owns it
    waiter.fail(RuntimeError("done"))


def test_inflight_asyncio_waiter_and_cancellation() -> None:
    registry: InFlight[float] = InFlight()
    owner = registry.claim(["k"])

    async def main() -> None:
        waiter = registry.claim(["k"])
        threading.Timer(0.05, lambda: owner.settle({"k": 4.5})).start()   # scored on another thread
        assert await waiter.wait_async(timeout=2.0) == ({"k": 4.5}, [])
        # A cancelled (disconnected) waiter does not cancel the owner's work.
        second_owner = registry.claim(["z"])
        second_waiter = registry.claim(["z"])
        task = asyncio.ensure_future(second_waiter.wait_async())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not second_waiter.waiting["z"].cancelled()
        second_owner.settle({"z": 1.0})
        assert second_waiter.waiting["z"].result() == 1.0
        # A slow owner: the waiter gives up after its timeout and scores the pair itself.
        slow = registry.claim(["s"])
        assert await registry.claim(["s"]).wait_async(timeout=0.02) == ({}, ["s"])
        slow.fail(RuntimeError("late"))

    asyncio.run(main())


# -- settings and build_cache ------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": "disk"}, "--cache must be one of"),
    ({"mode": "memory", "size": 0}, "--cache-size must be an integer ≥ 1"),
    ({"mode": "memory", "size": 2.5}, "--cache-size"),
    ({"mode": "redis"}, "needs --redis-url"),
    ({"mode": "redis", "redis_url": "http://x"}, "must start with redis://"),
    ({"mode": "memory", "redis_url": "redis://x"}, "add --cache redis"),
    ({"mode": "redis", "redis_url": "redis://x", "size": -1}, "--cache-size must be an integer ≥ 0"),
    ({"mode": "memory", "ttl_s": 0}, "--cache-ttl"),
    ({"mode": "memory", "timeout_ms": 0}, "--redis-timeout-ms"),
    ({"mode": "memory", "timeout_ms": 60_000}, "--redis-timeout-ms must be in"),
    ({"mode": "memory", "namespace": "a b"}, "namespace"),
    ({"mode": "memory", "namespace": ""}, "namespace"),
    ({"mode": "memory", "queue_size": 0}, "write queue"),
    ({"mode": "memory", "breaker_threshold": 0}, "failure threshold"),
    ({"mode": "memory", "breaker_cooldown_s": 0}, "cool-down"),
])
def test_settings_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        CacheSettings(**kwargs)


def test_build_cache_modes(fake: Any) -> None:
    assert build_cache(CacheSettings()) is None
    memory = build_cache(CacheSettings(mode="memory", size=5))
    assert memory is not None and memory.redis is None and memory.memory.max_entries == 5
    settings = CacheSettings(mode="redis", redis_url="redis://127.0.0.1:1/0", size=0, namespace="ns", ttl_s=30)
    cache = build_cache(settings, redis_client=fake)
    assert cache is not None and cache.memory is None and cache.redis.prefix == "rerankd:ns:"
    assert cache.redis.ttl_s == 30 and cache.warnings == []
    cache.close()


def test_build_cache_with_redis_down_still_starts() -> None:
    settings = CacheSettings(mode="redis", redis_url="redis://127.0.0.1:1/0", timeout_ms=50)
    started = time.perf_counter()
    cache = build_cache(settings)
    assert cache is not None and any("unreachable" in w for w in cache.warnings)
    assert cache.lookup(["k"]) == [None]
    assert time.perf_counter() - started < 1.0
    cache.close()


# -- metrics -----------------------------------------------------------------------------------------

def test_metrics_export_every_tier(fake: Any) -> None:
    prom = pytest.importorskip("prometheus_client", reason="metrics need prometheus-client (server extra)")
    from rerankd.cache.metrics import register_cache_metrics

    cache = ResultCache(MemoryCache(10), RedisTier(fake, breaker_threshold=1, breaker_cooldown_s=60))
    registry = prom.CollectorRegistry()
    register_cache_metrics(cache, registry)
    cache.store({"a": score(1)})
    cache.redis.flush(2.0)
    cache.memory.clear()
    cache.lookup(["a", "b"])                                     # memory: 2 misses; Redis: 1 hit, 1 miss
    cache.lookup(["a"], policy=CachePolicy(no_cache=True))
    value = registry.get_sample_value
    assert value("rerankd_cache_hits_total", {"tier": "memory"}) == 0
    assert value("rerankd_cache_misses_total", {"tier": "memory"}) == 2
    assert value("rerankd_cache_hits_total", {"tier": "redis"}) == 1
    assert value("rerankd_cache_misses_total", {"tier": "redis"}) == 1
    assert value("rerankd_cache_writes_total", {"tier": "redis", "outcome": "written"}) == 1
    assert value("rerankd_cache_entries", {"tier": "memory"}) == 1
    assert value("rerankd_cache_bypassed_total") == 1
    assert value("rerankd_cache_circuit_state", {"tier": "redis", "state": "closed"}) == 1
    cache.redis.client = FailingClient(redis.TimeoutError("slow"))
    cache.lookup(["c"])
    assert value("rerankd_cache_errors_total", {"tier": "redis", "kind": "timeout"}) == 1
    assert value("rerankd_cache_circuit_state", {"tier": "redis", "state": "open"}) == 1
    assert value("rerankd_cache_circuit_state", {"tier": "redis", "state": "closed"}) == 0
    assert value("rerankd_cache_circuit_opens_total", {"tier": "redis"}) == 1
    assert b"rerankd_cache_write_queue" in prom.generate_latest(registry)
    cache.close()
