"""The drift monitors as Prometheus metrics, computed when scraped (a custom collector, no per-request cost).

Every family is prefixed ``rerankd_drift_`` and labelled by ``model``; the per-query statistic a value
is about is the ``statistic`` label (``max`` | ``mean`` | ``median`` of a query's raw scores).

=================================  ==========================================  ============================
metric                             labels                                      shown
=================================  ==========================================  ============================
``rerankd_drift_queries``          model, window (reference | current)         always
``rerankd_drift_score_mean``       model, statistic, window                    once that window is ready
``rerankd_drift_score_quantile``   model, statistic, window, quantile          once that window is ready
``rerankd_drift_mean_shift``       model, statistic                            once both are ready
``rerankd_drift_psi``              model, statistic                            once both are ready
``rerankd_drift_ks_statistic``     model, statistic                            once both are ready
``rerankd_drift_ks_pvalue``        model, statistic                            once both are ready
``rerankd_drift_top_score``        model (a histogram: _bucket only, see below) always
=================================  ==========================================  ============================

The reference is ready once complete; the current window once it holds ``min_samples`` queries.

The top-score histogram counts every query since start, in raw-score units (logits and log-odds are
negative for irrelevant documents), so it has negative buckets, and OpenMetrics forbids ``_sum`` (and
prometheus-client then drops ``_count``) on such histograms: the ``le="+Inf"`` bucket is the count,
``histogram_quantile()`` works on the buckets as usual, and the window means are in
``rerankd_drift_score_mean{statistic="max"}``.

Example:
    >>> from prometheus_client import CollectorRegistry, generate_latest
    >>> registry = CollectorRegistry()
    >>> registry.register(DriftCollector({"m": DriftMonitor(100, 100, 50)}))
    >>> b'rerankd_drift_queries{model="m",window="reference"} 0.0' in generate_latest(registry)
    True
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from rerankd._optional import require
from rerankd.drift.monitor import QUANTILES, DriftMonitor
from rerankd.drift.reference import STATISTICS

PREFIX = "rerankd_drift_"
#: name → (help, labels) of every gauge family the collector emits.
GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "rerankd_drift_queries": ("queries held in each drift window", ("model", "window")),
    "rerankd_drift_score_mean": ("mean over a window's queries of a per-query raw-score statistic",
                                 ("model", "statistic", "window")),
    "rerankd_drift_score_quantile": ("quantile over a window's queries of a per-query raw-score statistic",
                                     ("model", "statistic", "window", "quantile")),
    "rerankd_drift_mean_shift": ("(current mean - reference mean) / (reference sd * sqrt(1/n_ref + 1/n_cur)); "
                                 "about N(0, 1) without drift", ("model", "statistic")),
    "rerankd_drift_psi": ("population stability index over the reference deciles (> 0.2: shifted)",
                          ("model", "statistic")),
    "rerankd_drift_ks_statistic": ("two-sample Kolmogorov-Smirnov D, reference vs current window",
                                   ("model", "statistic")),
    "rerankd_drift_ks_pvalue": ("asymptotic p-value of the two-sample Kolmogorov-Smirnov test",
                                ("model", "statistic")),
}
HISTOGRAM = "rerankd_drift_top_score"
HISTOGRAM_HELP = "each query's top raw score (logit, log-odds, or cosine for bi-encoders)"
#: The snapshot keys behind the reference-vs-current gauges.
#: The thresholds of deploy/prometheus/rerankd-alerts.yml (a test holds the file to them).
ALERT_MEAN_SHIFT_SE = 3.0
ALERT_PSI = 0.2
ALERT_KS_PVALUE = 0.01
ALERT_FOR = "15m"
_COMPARISONS = {"rerankd_drift_mean_shift": "mean_shift", "rerankd_drift_psi": "psi",
                "rerankd_drift_ks_statistic": "ks_statistic", "rerankd_drift_ks_pvalue": "ks_pvalue"}


class DriftCollector:
    """A prometheus-client collector over ``monitors`` (served name → monitor).

    Register it on the server's registry: ``registry.register(DriftCollector(monitors))``.
    """

    def __init__(self, monitors: Mapping[str, DriftMonitor]) -> None:
        self._prom = require("prometheus_client.core")
        self.monitors = dict(monitors)

    def describe(self) -> Iterator[Any]:
        """The families without samples: lets a registry refuse a second collector with the same names."""
        yield from self._families().values()

    def collect(self) -> Iterator[Any]:
        families = self._families()
        for model, monitor in self.monitors.items():
            snapshot = monitor.snapshot()
            queries = families["rerankd_drift_queries"]
            for window in ("reference", "current"):
                queries.add_metric([model, window], snapshot[window]["queries"])
            for statistic in STATISTICS:
                entry = snapshot["statistics"][statistic]
                for window in ("reference", "current"):
                    if window not in entry:
                        continue
                    families["rerankd_drift_score_mean"].add_metric([model, statistic, window], entry[window]["mean"])
                    for q in QUANTILES:
                        families["rerankd_drift_score_quantile"].add_metric(
                            [model, statistic, window, str(q)], entry[window]["quantiles"][str(q)])
                for name, key in _COMPARISONS.items():
                    if key in entry:
                        families[name].add_metric([model, statistic], entry[key])
            top = snapshot["top_score"]
            cumulative, buckets = 0, []
            for bound, count in zip([*map(self._go_float, top["buckets"]), "+Inf"], top["counts"], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            families[HISTOGRAM].add_metric([model], buckets, sum_value=top["sum"])
        yield from families.values()

    def _families(self) -> dict[str, Any]:
        prom = self._prom
        families: dict[str, Any] = {name: prom.GaugeMetricFamily(name, help_, labels=list(labels))
                                    for name, (help_, labels) in GAUGES.items()}
        families[HISTOGRAM] = prom.HistogramMetricFamily(HISTOGRAM, HISTOGRAM_HELP, labels=["model"])
        return families

    @staticmethod
    def _go_float(value: float) -> str:
        # The exposition spelling of a bucket bound ("1.0", "-12.0"), as prometheus-client's own Histogram writes it.
        return require("prometheus_client.utils").floatToGoString(value)


def metric_names() -> set[str]:
    """Every sample name the collector emits (of the histogram, ``_bucket`` only: see the module docstring)."""
    return set(GAUGES) | {HISTOGRAM + "_bucket"}


__all__ = ["ALERT_FOR", "ALERT_KS_PVALUE", "ALERT_MEAN_SHIFT_SE", "ALERT_PSI", "GAUGES", "HISTOGRAM", "PREFIX",
           "DriftCollector", "metric_names"]
