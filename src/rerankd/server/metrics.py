"""Prometheus metrics of one app, on its own registry (two apps in one process never collide)."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from rerankd._optional import require

_BATCH_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_BATCH_TOKENS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_REQUESTS_PER_BATCH = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics:
    """The server's collectors; also the scheduler's :class:`~rerankd.server.scheduler.BatchObserver`.

    Example:
        >>> metrics = ServerMetrics()
        >>> metrics.batch("m", rows=8, tokens=1024, requests=3, seconds=0.01)
        >>> b"rerankd_batch_requests_bucket" in metrics.render()[0]
        True
    """

    def __init__(self) -> None:
        prom = require("prometheus_client")
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter("rerankd_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.request_seconds = prom.Histogram("rerankd_request_duration_seconds", "HTTP request latency", ["route"],
                                              buckets=_SECONDS, registry=r)
        self.documents = prom.Counter("rerankd_documents", "documents scored", ["model"], registry=r)
        self.tokens = prom.Counter("rerankd_tokens", "tokens scored (after truncation)", ["model"], registry=r)
        self.errors = prom.Counter("rerankd_errors", "errors answered, by kind", ["kind"], registry=r)
        self.depth = prom.Gauge("rerankd_queue_depth", "sequences waiting for inference", ["model"], registry=r)
        self.batch_rows = prom.Histogram("rerankd_batch_size", "sequences per forward pass", ["model"],
                                         buckets=_BATCH_ROWS, registry=r)
        self.batch_tokens = prom.Histogram("rerankd_batch_tokens", "padded tokens per forward pass", ["model"],
                                           buckets=_BATCH_TOKENS, registry=r)
        self.batch_requests = prom.Histogram("rerankd_batch_requests", "distinct requests whose pairs share one forward pass",
                                             ["model"], buckets=_REQUESTS_PER_BATCH, registry=r)
        self.merged_batches = prom.Counter("rerankd_merged_batches", "forward passes holding pairs of 2 or more requests",
                                           ["model"], registry=r)
        self.stage_seconds = prom.Histogram("rerankd_stage_seconds", "time per stage: tokenize, queue, inference",
                                            ["stage", "model"], buckets=_SECONDS, registry=r)
        self.dropped_sequences = prom.Counter("rerankd_dropped_sequences", "queued sequences dropped because their "
                                              "client disconnected or their request failed", ["model"], registry=r)
        self.ready = prom.Gauge("rerankd_ready", "1 once every model is loaded and warmed", registry=r)
        # Read when scraped, so they are never stale.
        from rerankd.memory import peak_rss_bytes, resident_bytes

        prom.Gauge("rerankd_resident_memory_bytes", "resident memory of this process now", registry=r
                   ).set_function(resident_bytes)
        prom.Gauge("rerankd_peak_resident_memory_bytes", "peak resident memory of this process", registry=r
                   ).set_function(peak_rss_bytes)

    # -- BatchObserver ---------------------------------------------------------------------------------

    def queue_depth(self, model: str, sequences: int) -> None:
        self.depth.labels(model).set(sequences)

    def batch(self, model: str, *, rows: int, tokens: int, requests: int, seconds: float) -> None:
        self.batch_rows.labels(model).observe(rows)
        self.batch_tokens.labels(model).observe(tokens)
        self.batch_requests.labels(model).observe(requests)
        if requests > 1:
            self.merged_batches.labels(model).inc()
        self.stage_seconds.labels("inference", model).observe(seconds)

    def queue_wait(self, model: str, seconds: float) -> None:
        self.stage_seconds.labels("queue", model).observe(seconds)

    def dropped(self, model: str, sequences: int) -> None:
        self.dropped_sequences.labels(model).inc(sequences)

    # -- the server's own -----------------------------------------------------------------------------

    def tokenized(self, model: str, seconds: float) -> None:
        self.stage_seconds.labels("tokenize", model).observe(seconds)

    def scored(self, model: str, documents: int, tokens: int) -> None:
        self.documents.labels(model).inc(documents)
        self.tokens.labels(model).inc(tokens)

    def answered(self, route: str, status: int, seconds: float, error_kind: str | None) -> None:
        self.requests.labels(route, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)
        if error_kind:
            self.errors.labels(error_kind).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST


class MemoryCollector:
    """Per model: OOM back-offs and the current batch budget; per CUDA device in use: memory gauges.

    Read at scrape time from the pipelines' shared :class:`~rerankd.gpu_memory.TokenBudget` and
    from the device (``rerankd_gpu_memory_bytes{device,kind}``, kind = used, reserved, total;
    absent on CPU and MPS).
    """

    def __init__(self, pipelines: Mapping[str, Any]) -> None:
        self.pipelines = dict(pipelines)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from rerankd.gpu_memory import read_device_memory

        backoffs = CounterMetricFamily("rerankd_oom_backoffs", "batches that ran out of device memory and were "
                                       "split (the budget was lowered)", labels=["model"])
        budget = GaugeMetricFamily("rerankd_batch_token_budget", "tokens one forward pass may hold now", labels=["model"])
        devices: dict[str, None] = {}
        for name, pipeline in self.pipelines.items():
            backoffs.add_metric([name], pipeline.budget.backoffs)
            budget.add_metric([name], pipeline.budget.limits.max_tokens)
            devices[str(getattr(pipeline.backend, "device", "cpu"))] = None
        yield backoffs
        yield budget
        memory = GaugeMetricFamily("rerankd_gpu_memory_bytes", "GPU memory: used (all processes), reserved (by this "
                                   "process's allocator), total", labels=["device", "kind"])
        for device in devices:
            state = read_device_memory(device)
            if state is not None:
                for kind in ("used", "reserved", "total"):
                    memory.add_metric([device, kind], state.gauges()[kind])
        yield memory


class FeatureCacheCollector:
    """The image-feature caches of the served vision-language models, read at scrape time.

    ``rerankd_feature_cache_{hits,misses,evictions}_total`` count lookups of the vision tower's output
    per image; ``rerankd_feature_cache_bytes`` / ``_entries`` / ``_max_bytes`` say what it holds, and
    ``rerankd_vision_forward_items_total`` how many images and videos the tower actually ran on. Text
    models export nothing here.
    """

    _COUNTERS = (("hits", "image-feature cache hits (vision tower skipped)"),
                 ("misses", "image-feature cache misses (vision tower run)"),
                 ("evictions", "image-feature cache entries evicted to stay under its byte cap"))
    _GAUGES = (("bytes", "bytes of vision features held"), ("entries", "images and videos held"),
               ("max_bytes", "the cache's byte cap (--vision-cache-bytes)"))

    def __init__(self, engines: Any) -> None:
        self.engines = engines

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        rows = []
        for name, engine in self.engines.items():
            stats = getattr(engine.backend, "stats", None)
            stats = stats() if callable(stats) else {}
            if stats:
                rows.append((name, stats))
        if not rows:
            return
        for key, text in self._COUNTERS:
            family = CounterMetricFamily(f"rerankd_feature_cache_{key}", text, labels=["model"])
            for name, stats in rows:
                family.add_metric([name], float(stats.get("feature_cache", {}).get(key, 0)))
            yield family
        for key, text in self._GAUGES:
            family = GaugeMetricFamily(f"rerankd_feature_cache_{key}", text, labels=["model"])
            for name, stats in rows:
                family.add_metric([name], float(stats.get("feature_cache", {}).get(key, 0)))
            yield family
        family = CounterMetricFamily("rerankd_vision_forward_items", "images and videos the vision tower ran on",
                                     labels=["model"])
        for name, stats in rows:
            family.add_metric([name], float(stats.get("vision_items", 0)))
        yield family
