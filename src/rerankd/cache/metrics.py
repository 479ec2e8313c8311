"""Prometheus export of the cache's counters, read from :meth:`ResultCache.stats` at scrape time.

A collector rather than counters bumped per lookup: the cache keeps plain integers (no prometheus-client
on the hot path, none needed by the offline API), and a scrape turns them into metric families.

Metrics (``tier`` is ``memory`` or ``redis``):

- ``rerankd_cache_hits_total{tier}``, ``rerankd_cache_misses_total{tier}``: keys found / not found
  (a Redis error, timeout or open circuit counts every key it was asked as a miss).
- ``rerankd_cache_errors_total{tier,kind}``: failed Redis calls, ``kind`` = ``timeout`` | ``error``, and
  ``corrupt`` values (not a cached score) read under our prefix.
- ``rerankd_cache_skipped_total{tier}``: keys not asked because the circuit was open.
- ``rerankd_cache_writes_total{tier,outcome}``: ``written`` | ``dropped`` (queue full) | ``failed``.
- ``rerankd_cache_write_queue{tier}``: writes waiting for the background writer.
- ``rerankd_cache_circuit_state{tier,state}``: 1 for the current state (closed, open, half_open), else 0;
  ``rerankd_cache_circuit_opens_total{tier}``.
- ``rerankd_cache_entries{tier}``, ``rerankd_cache_capacity{tier}``, ``rerankd_cache_evictions_total{tier}``.
- ``rerankd_cache_bypassed_total`` (keys not read under ``no-cache``), ``rerankd_cache_unstored_total``
  (entries not written under ``no-store``).
"""

from __future__ import annotations

from typing import Any, Iterator

from rerankd._optional import require
from rerankd.cache.breaker import STATES
from rerankd.cache.tiers import ResultCache


class CacheCollector:
    """A prometheus-client collector of one :class:`ResultCache`.

    Example:
        >>> from rerankd.cache.memory import MemoryCache
        >>> prom = require("prometheus_client")
        >>> registry = prom.CollectorRegistry()
        >>> _ = register_cache_metrics(ResultCache(MemoryCache(10)), registry)
        >>> registry.get_sample_value("rerankd_cache_misses_total", {"tier": "memory"})
        0
    """

    def __init__(self, cache: ResultCache) -> None:
        self.cache = cache
        self._prom = require("prometheus_client.core")

    def describe(self) -> Iterator[Any]:
        return self.collect()

    def collect(self) -> Iterator[Any]:
        core = self._prom
        stats = self.cache.stats()
        tiers = [name for name in ("memory", "redis") if name in stats]

        def family(kind: Any, name: str, doc: str, labels: list[str]) -> Any:
            return kind(name, doc, labels=labels)

        hits = family(core.CounterMetricFamily, "rerankd_cache_hits", "cache keys found, per tier", ["tier"])
        misses = family(core.CounterMetricFamily, "rerankd_cache_misses", "cache keys not found, per tier", ["tier"])
        for tier in tiers:
            hits.add_metric([tier], stats[tier]["hits"])
            misses.add_metric([tier], stats[tier]["misses"])
        yield hits
        yield misses

        if "memory" in stats:
            mem = stats["memory"]
            for kind, name, doc, value in (
                (core.GaugeMetricFamily, "rerankd_cache_entries", "entries held", mem["entries"]),
                (core.GaugeMetricFamily, "rerankd_cache_capacity", "most entries held", mem["capacity"]),
                (core.CounterMetricFamily, "rerankd_cache_evictions", "entries evicted (least recently used)",
                 mem["evictions"]),
            ):
                metric = family(kind, name, doc, ["tier"])
                metric.add_metric(["memory"], value)
                yield metric

        if "redis" in stats:
            red = stats["redis"]
            errors = family(core.CounterMetricFamily, "rerankd_cache_errors",
                            "failed Redis calls (timeout, error) and corrupt values read", ["tier", "kind"])
            errors.add_metric(["redis", "timeout"], red["timeouts"])
            errors.add_metric(["redis", "error"], red["errors"] - red["timeouts"])
            errors.add_metric(["redis", "corrupt"], red["corrupt"])
            yield errors
            skipped = family(core.CounterMetricFamily, "rerankd_cache_skipped",
                             "keys not asked of Redis because the circuit was open", ["tier"])
            skipped.add_metric(["redis"], red["skipped"])
            yield skipped
            writes = family(core.CounterMetricFamily, "rerankd_cache_writes",
                            "Redis writes: written, dropped (queue full), failed", ["tier", "outcome"])
            writes.add_metric(["redis", "written"], red["written"])
            writes.add_metric(["redis", "dropped"], red["dropped_writes"])
            writes.add_metric(["redis", "failed"], red["failed_writes"])
            yield writes
            queue = family(core.GaugeMetricFamily, "rerankd_cache_write_queue",
                           "Redis writes waiting for the background writer", ["tier"])
            queue.add_metric(["redis"], red["queued"])
            yield queue
            state = family(core.GaugeMetricFamily, "rerankd_cache_circuit_state",
                           "1 for the Redis circuit breaker's current state", ["tier", "state"])
            for name in STATES:
                state.add_metric(["redis", name], 1.0 if red["circuit"] == name else 0.0)
            yield state
            opens = family(core.CounterMetricFamily, "rerankd_cache_circuit_opens",
                           "times the Redis circuit breaker opened", ["tier"])
            opens.add_metric(["redis"], red["circuit_opens"])
            yield opens

        yield core.CounterMetricFamily("rerankd_cache_bypassed", "keys not read because of Cache-Control: no-cache",
                                       value=stats["bypassed"])
        yield core.CounterMetricFamily("rerankd_cache_unstored", "entries not stored because of Cache-Control: "
                                       "no-store", value=stats["unstored"])


def register_cache_metrics(cache: ResultCache, registry: Any) -> CacheCollector:
    """Register a :class:`CacheCollector` of ``cache`` on ``registry`` (a ``prometheus_client.CollectorRegistry``)."""
    collector = CacheCollector(cache)
    registry.register(collector)
    return collector
