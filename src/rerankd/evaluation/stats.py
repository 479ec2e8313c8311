"""Is B really better than A? Paired tests over per-query metric values.

Both tests pair the same query's value in the two runs: a paired t-test (scipy) and a paired
bootstrap (Sakai's shift method: resample queries, count resampled mean differences at least as far
from the observed one as the observed one is from zero). A query a run did not answer counts 0.

Example:
    >>> test = paired_test(bm25_result, reranked_result, "ndcg@10")     # doctest: +SKIP
    >>> test.delta, test.t_p, test.bootstrap_p                            # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rerankd._optional import require
from rerankd.errors import InputError
from rerankd.evaluation.metrics import EvalResult


@dataclass(frozen=True)
class PairedTest:
    """B minus A on one metric, with two-sided p-values and a 95% bootstrap interval of the difference."""

    metric: str
    queries: int
    mean_a: float
    mean_b: float
    delta: float
    t_statistic: float
    t_p: float
    bootstrap_p: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """e.g. ``+0.0312 [+0.0120, +0.0501], p=0.0021 (t) / 0.0019 (bootstrap)``"""
        return (f"{self.delta:+.4f} [{self.ci_low:+.4f}, {self.ci_high:+.4f}], "
                f"p={self.t_p:.4f} (t) / {self.bootstrap_p:.4f} (bootstrap)")


def paired_values(a: EvalResult, b: EvalResult, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-query values of ``metric`` in both results, over the union of their queries (missing → 0)."""
    qids = sorted(set(a.per_query) | set(b.per_query))
    if not qids:
        raise InputError("neither result has a judged query; nothing to compare")
    for result in (a, b):
        sample = next(iter(result.per_query.values()), {})
        if sample and metric not in sample:
            raise InputError(f"metric {metric!r} was not computed; evaluate with it first (have {sorted(sample)})")
    va = np.array([a.per_query.get(q, {}).get(metric, 0.0) for q in qids], dtype=np.float64)
    vb = np.array([b.per_query.get(q, {}).get(metric, 0.0) for q in qids], dtype=np.float64)
    return va, vb


def paired_test(a: EvalResult, b: EvalResult, metric: str = "ndcg@10", resamples: int = 10_000, seed: int = 0) -> PairedTest:
    """Paired t-test and paired bootstrap of ``b - a`` on ``metric``."""
    va, vb = paired_values(a, b, metric)
    diff = vb - va
    observed = float(diff.mean())
    if np.allclose(diff, diff[0]):  # identical (or uniformly shifted) values: no variance to test
        t_stat, t_p = (0.0, 1.0) if observed == 0 else (float("inf") * np.sign(observed), 0.0)
    else:
        stats = require("scipy.stats")
        result = stats.ttest_rel(vb, va)
        t_stat, t_p = float(result.statistic), float(result.pvalue)
    rng = np.random.default_rng(seed)
    block = max(1, 4_000_000 // len(diff))  # bounded memory however many queries
    means = np.concatenate([diff[rng.integers(0, len(diff), size=(min(block, resamples - i), len(diff)))].mean(axis=1)
                            for i in range(0, resamples, block)])
    bootstrap_p = float(np.mean(np.abs(means - observed) >= abs(observed) - 1e-12)) if observed != 0 else 1.0
    low, high = np.percentile(means, [2.5, 97.5])
    return PairedTest(metric, len(diff), float(va.mean()), float(vb.mean()), observed, t_stat, t_p, bootstrap_p,
                      float(low), float(high))
