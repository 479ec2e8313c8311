"""Score-drift monitoring: per model, each query's max, mean and median raw score, a reference window
and a rolling current window, compared at scrape time (mean shift, PSI, KS, quantiles, a top-score
histogram) and exported to Prometheus.

Hook it in at two places: the pipeline's finish step calls ``monitors[name].observe(scores.raw)`` once
per query; the server registers ``DriftCollector(monitors)`` on its metrics registry.

Example:
    >>> from rerankd.drift import DriftMonitor
    >>> monitor = DriftMonitor(reference_size=100, window_size=100, min_samples=50)
    >>> monitor.observe([2.5, -1.0, 0.3])
    True
    >>> monitor.snapshot()["reference"]["queries"]
    1

Importing this package is light (numpy only); prometheus-client loads when a :class:`DriftCollector` is made.
"""

from __future__ import annotations

from rerankd.drift.monitor import COSINE_BUCKETS, LOGIT_BUCKETS, QUANTILES, DriftMonitor, monitors_for, top_score_buckets
from rerankd.drift.prometheus import DriftCollector
from rerankd.drift.reference import STATISTICS, ReferenceSnapshot, load_reference, save_reference
from rerankd.drift.settings import DriftSettings

__all__ = ["COSINE_BUCKETS", "LOGIT_BUCKETS", "QUANTILES", "STATISTICS", "DriftCollector", "DriftMonitor",
           "DriftSettings", "ReferenceSnapshot", "load_reference", "monitors_for", "save_reference",
           "top_score_buckets"]
