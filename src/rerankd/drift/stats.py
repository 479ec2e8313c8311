"""The two-window statistics of the drift monitor, in numpy alone (they run at scrape time, never per request).

Each function compares a *reference* sample with a *current* sample of one per-query statistic
(max, mean or median of a query's raw scores):

- :func:`mean_shift`: how far the current mean moved, in standard errors of a difference of two means
  whose spread is the reference's.
- :func:`psi`: the population stability index over the reference's deciles.
- :func:`ks_2samp`: the two-sample Kolmogorov–Smirnov statistic and its asymptotic p-value.

Why not scipy: ``rerankd serve`` runs the monitor by default and the ``server`` extra does not carry
scipy (it is in ``eval``). The KS *statistic* is exact here; the p-value is Kolmogorov's limit law with
Stephens' small-sample correction (the one Numerical Recipes' ``probks`` uses). At the sample sizes the
gauges are shown at (200 queries or more per window) it is within 0.02 of ``scipy.stats.ks_2samp``'s
exact p everywhere and within 15% of it (a little lower) around the 0.01 an alert compares it with (a
test checks both against scipy).
"""

from __future__ import annotations

import math

import numpy as np

#: Replaces an empty bin's share in :func:`psi` (ln 0 is undefined). An empty decile then adds
#: (0.1 - 1e-4) * ln(0.1 / 1e-4) = 0.69 on its own, which is right when a sample really misses a decile
#: and harmless at the default 200 current queries (a decile is empty by chance with p = 0.9**200, 1e-9).
PSI_EPSILON = 1e-4
DECILES = tuple(k / 10 for k in range(1, 10))


def mean_shift(reference: np.ndarray, current: np.ndarray) -> float:
    """``(mean_cur - mean_ref) / (sd_ref * sqrt(1/n_ref + 1/n_cur))``.

    The numerator is the move of the mean; the denominator is its standard error if the current window
    were drawn from the reference distribution (both means carry sampling error, hence both terms).
    ``sd_ref`` is the reference's sample standard deviation (ddof=1): a current window whose spread grew
    does not shrink the shift it shows. Under no drift the value is about standard normal, so ±3 is a
    3-sigma move. A constant reference (sd 0) gives 0 when the means agree and ±inf when they do not.

    Example:
        >>> round(mean_shift(np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.5, 1.5])), 6)
        0.0
    """
    n_ref, n_cur = len(reference), len(current)
    diff = float(np.mean(current) - np.mean(reference))
    sd = float(np.std(reference, ddof=1))
    if sd == 0.0:
        return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    return diff / (sd * math.sqrt(1.0 / n_ref + 1.0 / n_cur))


def decile_edges(reference: np.ndarray) -> np.ndarray:
    """The inner edges of the reference's deciles (ties merged, so a discrete sample gets fewer bins)."""
    return np.unique(np.quantile(reference, DECILES))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each bin ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def psi(reference: np.ndarray, current: np.ndarray, edges: np.ndarray | None = None) -> float:
    """Population stability index ``sum((c - r) * ln(c / r))`` over the reference's deciles.

    ``r`` and ``c`` are each bin's share of the reference and of the current sample; a share of 0
    becomes :data:`PSI_EPSILON`. Rule of thumb: below 0.1 stable, 0.1–0.2 moving, above 0.2 shifted.
    Sampling noise alone gives about ``(bins - 1) * (1/n_ref + 1/n_cur)``: 0.05 at 1000 reference and 200
    current queries (why ``min_samples`` defaults to 200).

    Example:
        >>> ref = np.arange(1000.0)
        >>> psi(ref, ref) < 1e-12
        True
    """
    edges = decile_edges(reference) if edges is None else edges
    r = np.maximum(bin_shares(reference, edges), PSI_EPSILON)
    c = np.maximum(bin_shares(current, edges), PSI_EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def ks_2samp(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov: ``(D, p)``, D the largest gap between the two empirical CDFs.

    D is exact (ties handled: both CDFs are evaluated at every pooled value). The p-value is the
    asymptotic two-sided one, ``Q_KS((sqrt(ne) + 0.12 + 0.11 / sqrt(ne)) * D)`` with
    ``ne = n_ref * n_cur / (n_ref + n_cur)``.

    Example:
        >>> d, p = ks_2samp(np.arange(100.0), np.arange(100.0) + 50)
        >>> d, p < 1e-8
        (0.5, True)
    """
    a = np.sort(np.asarray(reference, dtype=np.float64))
    b = np.sort(np.asarray(current, dtype=np.float64))
    pooled = np.concatenate([a, b])
    gap = np.abs(np.searchsorted(a, pooled, side="right") / len(a) - np.searchsorted(b, pooled, side="right") / len(b))
    d = float(gap.max())
    root = math.sqrt(len(a) * len(b) / (len(a) + len(b)))
    return d, kolmogorov_sf((root + 0.12 + 0.11 / root) * d)


def kolmogorov_sf(x: float) -> float:
    """``P(K > x)`` for Kolmogorov's distribution ``K = sup |Brownian bridge|``.

    Two series of the same function, each used where it converges in a few terms:
    ``1 - sqrt(2 pi)/x * sum exp(-(2k-1)^2 pi^2 / (8 x^2))`` below 1, ``2 * sum (-1)^(k-1) exp(-2 k^2 x^2)``
    from 1 on (twenty terms are past double precision in both).
    """
    if x <= 0.0:
        return 1.0
    k = np.arange(1, 21, dtype=np.float64)
    if x < 1.0:
        cdf = math.sqrt(2.0 * math.pi) / x * float(np.sum(np.exp(-((2 * k - 1) ** 2) * math.pi**2 / (8.0 * x * x))))
        return min(1.0, max(0.0, 1.0 - cdf))
    signs = np.where(k % 2 == 1, 1.0, -1.0)
    return min(1.0, max(0.0, 2.0 * float(np.sum(signs * np.exp(-2.0 * k * k * x * x)))))


__all__ = ["DECILES", "PSI_EPSILON", "bin_shares", "decile_edges", "kolmogorov_sf", "ks_2samp", "mean_shift", "psi"]
