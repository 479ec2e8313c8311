"""The Redis tier against a real redis-server: sharing, TTL, eviction, a paused and a killed Redis.

Each test that harms its server (SIGSTOP, SIGKILL, a small maxmemory) starts its own on a free loopback
port; the others share one per session. All run with ``--save '' --appendonly no`` (nothing on disk).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from redis_server import REDIS_SERVER, SKIP_REASON, RedisServer

from rerankd.cache import CachedScore, CacheSettings, MemoryCache, RedisTier, ResultCache, build_cache, connect

redis = pytest.importorskip("redis", reason="the redis tier needs redis-py: pip install 'rerankd[cache]'")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason=SKIP_REASON)
SRC = str(Path(__file__).resolve().parents[1] / "src")
TIMEOUT_MS = 50


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), "--maxmemory-policy", "allkeys-lru").start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Any]:
    """Start dedicated servers with extra arguments; all stopped at the end of the test."""
    servers: list[RedisServer] = []

    def start(*args: str, port: int | None = None) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", *args, port=port).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def score(i: int) -> CachedScore:
    return CachedScore(raw=(i - 500) / 13.0, truncated=i % 3 == 0, tokens=i % 512)


def settings(url: str, namespace: str, **kwargs: Any) -> CacheSettings:
    return CacheSettings(mode="redis", redis_url=url, namespace=namespace, timeout_ms=TIMEOUT_MS, **kwargs)


def test_two_instances_share_hits(shared_redis: RedisServer) -> None:
    first = build_cache(settings(shared_redis.url, "share", size=1000))
    second = build_cache(settings(shared_redis.url, "share", size=1000))
    assert first is not None and second is not None
    try:
        assert first.warnings == []                    # allkeys-lru: nothing to warn about
        items = {f"k{i}": score(i) for i in range(200)}
        first.store(items)
        assert first.redis.flush(5.0)
        keys = list(items) + ["unknown"]
        assert second.lookup(keys) == [*items.values(), None]
        stats = second.stats()
        assert stats["redis"]["hits"] == 200 and stats["memory"]["misses"] == 201
        assert second.lookup(["k7"]) == [score(7)] and second.stats()["memory"]["hits"] == 1
    finally:
        first.close()
        second.close()


CHILD = """
import json, sys
from rerankd.cache import CachedScore, CacheSettings, build_cache
cache = build_cache(CacheSettings(mode="redis", redis_url=sys.argv[1], namespace="procs", timeout_ms=500))
found = cache.lookup([f"parent{i}" for i in range(50)])
cache.store({f"child{i}": CachedScore(raw=i * 0.5, truncated=False, tokens=i) for i in range(50)})
assert cache.redis.flush(5.0)
print(json.dumps([None if f is None else f.to_json() for f in found]))
cache.close()
"""


def test_two_processes_share_hits(shared_redis: RedisServer) -> None:
    parent = build_cache(settings(shared_redis.url, "procs"))
    assert parent is not None
    try:
        parent.store({f"parent{i}": score(i) for i in range(50)})
        assert parent.redis.flush(5.0)
        # Another interpreter, another hash seed: the keys and the entries still agree.
        out = subprocess.run([sys.executable, "-c", CHILD, shared_redis.url], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "PYTHONPATH": SRC, "PYTHONHASHSEED": "12345"})
        assert out.returncode == 0, out.stderr
        child_saw = [CachedScore.from_json(s) for s in json.loads(out.stdout)]
        assert child_saw == [score(i) for i in range(50)]
        assert parent.lookup([f"child{i}" for i in range(50)]) == \
            [CachedScore(raw=i * 0.5, truncated=False, tokens=i) for i in range(50)]
        assert parent.stats()["redis"]["hits"] == 50
    finally:
        parent.close()


def test_ttl_expiry(shared_redis: RedisServer) -> None:
    tier = RedisTier(connect(shared_redis.url, TIMEOUT_MS), namespace="ttl", ttl_s=1)
    try:
        tier.put_many({"short": score(1)})
        assert tier.flush(5.0)
        raw = shared_redis.client()
        assert 0 < raw.pttl("rerankd:ttl:short") <= 1000
        assert tier.get_many(["short"]) == [score(1)]
        time.sleep(1.15)
        assert tier.get_many(["short"]) == [None]
        assert raw.exists("rerankd:ttl:short") == 0
    finally:
        tier.close()


def test_eviction_under_maxmemory_with_allkeys_lru(own_redis: Any) -> None:
    # 10 samples per eviction (default 5) keeps Redis's approximate LRU close to the exact order, which a
    # loaded CI machine otherwise blurs (hot keys kept 52% in one run at the default).
    server = own_redis("--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru", "--maxmemory-samples", "10")
    tier = RedisTier(connect(server.url, 500), namespace="lru", queue_size=100_000)

    def write(keys: range) -> None:
        tier.put_many({f"k{i}": score(i) for i in keys})
        assert tier.flush(10.0)

    try:
        assert tier.check_eviction_policy() is None
        write(range(0, 4000))                           # fits in 2 MB
        # Redis's LRU clock ticks once a second (read from a cron at 10 Hz): let the first keys age by two
        # ticks, then read some (they become recent).
        time.sleep(2.2)
        hot = [f"k{i}" for i in range(0, 4000, 8)]
        assert all(e is not None for e in tier.get_many(hot))
        for start in range(4000, 9000, 1000):
            write(range(start, start + 1000))           # past 2 MB: about 2500 keys must go
        stats = tier.stats()
        assert stats["failed_writes"] == 0 and stats["dropped_writes"] == 0 and stats["written"] == 9000
        raw = server.client()
        kept = raw.dbsize()
        assert 1000 < kept < 9000 and int(raw.info("stats")["evicted_keys"]) >= 9000 - kept
        cold = [f"k{i}" for i in range(4000) if i % 8]
        hot_kept = sum(e is not None for e in tier.get_many(hot)) / len(hot)
        cold_kept = sum(e is not None for e in tier.get_many(cold)) / len(cold)
        # Sampled LRU, so not exact: the keys read recently survive far more often than the idle ones.
        assert hot_kept > 0.6 and hot_kept > 3 * cold_kept, (hot_kept, cold_kept)
        recent = [f"k{i}" for i in range(8000, 9000)]
        assert all(e is None or e == score(int(k[1:])) for k, e in zip(recent, tier.get_many(recent)))
    finally:
        tier.close()


def test_noeviction_is_warned_and_full_redis_fails_writes_quietly(own_redis: Any,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    server = own_redis("--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
    with caplog.at_level("WARNING", logger="rerankd.cache"):
        cache = build_cache(settings(server.url, "full", size=0, queue_size=100_000))
    assert cache is not None
    try:
        assert len(cache.warnings) == 1 and "noeviction" in cache.warnings[0] and "noeviction" in caplog.text
        for start in range(0, 12_000, 4000):
            cache.store({f"k{i}": score(i) for i in range(start, start + 4000)})
        assert cache.redis.flush(10.0)
        stats = cache.stats()["redis"]
        assert stats["written"] > 0 and stats["failed_writes"] > 0       # OOM replies, counted, never raised
        assert stats["written"] + stats["failed_writes"] == 12_000 and stats["circuit"] == "closed"
    finally:
        cache.close()
    # A Redis with CONFIG disabled (as managed services do): no warning, no failure.
    locked = own_redis("--rename-command", "CONFIG", "")
    cache = build_cache(settings(locked.url, "locked"))
    assert cache is not None and cache.warnings == []
    cache.close()


def test_sigstop_mid_load_every_lookup_returns_within_the_timeout(own_redis: Any) -> None:
    server = own_redis("--maxmemory-policy", "allkeys-lru")
    tier = RedisTier(connect(server.url, TIMEOUT_MS), namespace="stop", breaker_threshold=3, breaker_cooldown_s=0.3)
    cache = ResultCache(None, tier)                     # no memory tier: every lookup goes to Redis
    stored = {f"k{i}": score(i) for i in range(100)}
    cache.store(stored)
    assert tier.flush(5.0)
    calls: list[tuple[float, float, bool]] = []        # (start, seconds, all answers correct)
    stop = threading.Event()
    lock = threading.Lock()

    def load(worker: int) -> None:
        i = 0
        while not stop.is_set():
            keys = [f"k{(worker * 31 + i + j) % 100}" for j in range(8)] + [f"new{worker}-{i}"]
            started = time.perf_counter()
            found = cache.lookup(keys)
            seconds = time.perf_counter() - started
            cache.store({keys[-1]: score(i)})          # writes keep flowing too; they must not block
            correct = found[-1] is None and all(f is None or f == stored[k] for k, f in zip(keys, found))
            with lock:
                calls.append((started, seconds, correct))
            i += 1
            time.sleep(0.002)

    workers = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.3)
        hits_before = tier.stats()["hits"]
        stopped_at = time.perf_counter()
        server.signal(signal.SIGSTOP)
        time.sleep(1.0)
        during = tier.stats()
    finally:
        server.signal(signal.SIGCONT)
        stop.set()
        for w in workers:
            w.join(5)
    assert hits_before > 0 and calls
    slack = 0.25                                        # two shared CPU cores, four threads
    slowest = max(seconds for _, seconds, _ in calls)
    assert slowest <= TIMEOUT_MS / 1000 + slack, f"a lookup took {slowest:.3f}s"
    assert all(correct for _, _, correct in calls)     # a paused Redis gives misses, never a wrong score
    assert during["timeouts"] >= 3 and during["circuit_opens"] >= 1 and during["skipped"] > 0
    paused = [s for started, s, _ in calls if started > stopped_at + 0.2]
    assert paused and sorted(paused)[len(paused) // 2] < 0.01   # with the circuit open, misses are immediate
    # Redis back: after the cool-down one probe closes the circuit and hits resume.
    time.sleep(0.35)
    assert cache.lookup(["k1", "k2"]) == [stored["k1"], stored["k2"]]
    assert tier.circuit == "closed"
    cache.close()


def test_sigkill_then_restart_opens_then_recovers(own_redis: Any) -> None:
    server = own_redis("--maxmemory-policy", "allkeys-lru")
    port = server.port
    tier = RedisTier(connect(server.url, TIMEOUT_MS), namespace="kill", breaker_threshold=3, breaker_cooldown_s=0.3)
    cache = ResultCache(MemoryCache(100), tier)
    try:
        cache.store({"before": score(1)})
        assert tier.flush(5.0)
        server.kill()
        for _ in range(3):
            started = time.perf_counter()
            assert cache.lookup([f"x{_}"]) == [None]
            assert time.perf_counter() - started < TIMEOUT_MS / 1000 + 0.25
        assert tier.circuit == "open" and tier.stats()["errors"] == 3
        errors = tier.stats()["errors"]
        assert cache.lookup(["y"]) == [None] and tier.stats()["errors"] == errors   # skipped, not tried
        assert cache.lookup(["before"]) == [score(1)]                               # memory still serves
        # Still down after the cool-down: the half-open probe fails and the circuit opens again.
        time.sleep(0.35)
        assert tier.circuit == "half_open"
        assert cache.lookup(["z"]) == [None]
        assert tier.circuit == "open" and tier.stats()["circuit_opens"] == 2
        # Restarted on the same port (empty: nothing was saved), then the cool-down: one probe closes it.
        own_redis("--maxmemory-policy", "allkeys-lru", port=port)
        time.sleep(0.35)
        assert tier.circuit == "half_open"
        assert cache.lookup(["fresh"]) == [None]
        assert tier.circuit == "closed"
        cache.store({"after": score(2)})
        assert tier.flush(5.0) and tier.stats()["written"] >= 2
        other = ResultCache(None, RedisTier(connect(server.url, TIMEOUT_MS), namespace="kill"))
        assert other.lookup(["after", "before"]) == [score(2), None]   # hits resume; the old data died with Redis
        other.close()
    finally:
        cache.close()
