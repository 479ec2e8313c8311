"""One model's score-drift monitor: cheap to feed per query, compared at scrape time.

Per query it keeps three numbers of the query's raw scores (max, mean, median) in fixed-size arrays:
first the reference window (the first ``reference_size`` queries, or a saved reference), then a ring
buffer of the last ``window_size`` queries. :meth:`DriftMonitor.snapshot` compares the two windows with
:mod:`rerankd.drift.stats`; nothing heavier than three reductions over one query's scores and one row
write under a lock happens per query.

Queries go to the current window only once the reference is complete, so the two windows never share a
query (the statistics assume two independent samples).

Example:
    >>> import numpy as np
    >>> monitor = DriftMonitor(reference_size=100, window_size=100, min_samples=50)
    >>> rng = np.random.default_rng(0)
    >>> for _ in range(200):
    ...     _ = monitor.observe(rng.normal(size=10))
    >>> sorted(monitor.snapshot()["statistics"]["max"])
    ['current', 'ks_pvalue', 'ks_statistic', 'mean_shift', 'psi', 'reference']
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rerankd.drift import stats
from rerankd.drift.reference import STATISTICS, ReferenceSnapshot, check_fingerprint, load_reference, save_reference
from rerankd.drift.settings import DriftSettings
from rerankd.errors import InputError

log = logging.getLogger("rerankd.drift")

#: Quantile gauges of each window.
QUANTILES = (0.1, 0.5, 0.9)
#: Top-score histogram buckets (upper bounds) for models whose raw score is a logit or log-odds
#: (cross-encoders, LLM yes/no rerankers): sigmoid(±4) is 0.018/0.982, ±12 covers the confident ends.
LOGIT_BUCKETS = (-12.0, -10.0, -8.0, -6.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0)
#: Top-score histogram buckets for bi-encoders, whose raw score is a cosine in [-1, 1].
COSINE_BUCKETS = (-0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def top_score_buckets(family_kind: str) -> tuple[float, ...]:
    """The histogram buckets that suit a family's raw scores (``family.kind``)."""
    return COSINE_BUCKETS if family_kind == "bi-encoder" else LOGIT_BUCKETS


class DriftMonitor:
    """Watches one model's per-query score statistics against a reference window.

    Args:
        reference_size: the first this many queries become the reference (ignored with ``reference``).
        window_size: the current window holds the last this many queries.
        min_samples: queries the current window needs before the comparisons are reported.
        reference: a saved reference to compare with from the first query on.
        fingerprint: the model's fingerprint; checked against ``reference``'s and saved with a collected one.
        top_buckets: upper bounds of the top-score histogram, in raw-score units (see :func:`top_score_buckets`).
        save_reference_to: write the collected reference here (once, from a background thread) when complete.

    Raises:
        InputError: sizes out of range (see :class:`~rerankd.drift.settings.DriftSettings`), a reference
            of another fingerprint or with fewer than ``min_samples`` queries, or unsorted buckets.
    """

    def __init__(
        self,
        reference_size: int = DriftSettings.reference_size,
        window_size: int = DriftSettings.window_size,
        min_samples: int = DriftSettings.min_samples,
        reference: ReferenceSnapshot | None = None,
        fingerprint: Mapping[str, str] | None = None,
        *,
        top_buckets: Sequence[float] = LOGIT_BUCKETS,
        save_reference_to: str | os.PathLike[str] | None = None,
    ) -> None:
        DriftSettings(reference_size=reference_size, window_size=window_size, min_samples=min_samples)  # validates
        if reference is not None:
            if fingerprint is not None:
                check_fingerprint("given", reference.fingerprint, fingerprint)
            if reference.queries < min_samples:
                raise InputError(f"the drift reference holds {reference.queries} queries but min_samples is "
                                 f"{min_samples}; collect a longer reference or lower --drift-min-samples")
        buckets = tuple(float(b) for b in top_buckets)
        if not buckets or any(not math.isfinite(b) for b in buckets) or list(buckets) != sorted(set(buckets)):
            raise InputError(f"top-score buckets must be finite, strictly increasing numbers; got {top_buckets!r}")
        self.reference_size = reference.queries if reference is not None else reference_size
        self.window_size = window_size
        self.min_samples = min_samples
        self.fingerprint = dict(fingerprint if fingerprint is not None else (reference.fingerprint if reference else {}))
        self.buckets = buckets
        self._source = "file" if reference is not None else "stream"
        self._save_to = Path(save_reference_to) if save_reference_to is not None and reference is None else None
        self._lock = threading.Lock()
        self._reference = reference
        self._filling: np.ndarray | None = None if reference is not None else np.empty((reference_size, len(STATISTICS)))
        self._filled = 0
        self._window = np.empty((window_size, len(STATISTICS)))
        self._held = 0
        self._next = 0
        self._top_counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self._top_sum = 0.0
        self._skipped = 0
        self._saver: threading.Thread | None = None
        self._saved: Path | None = None

    @classmethod
    def from_settings(
        cls,
        settings: DriftSettings,
        model: str,
        *,
        fingerprint: Mapping[str, str],
        family_kind: str = "cross-encoder",
        served_models: int = 1,
    ) -> "DriftMonitor":
        """The monitor of served model ``model``: its reference file is loaded when it exists (and must match
        ``fingerprint``), else the collected reference is written there.

        Example:
            >>> DriftMonitor.from_settings(DriftSettings(), "minilm", fingerprint={"revision": "abc"}).window_size
            500
        """
        path = settings.reference_path(model, served_models)
        reference = load_reference(path, fingerprint) if path is not None and path.exists() else None
        return cls(settings.reference_size, settings.window_size, settings.min_samples, reference, fingerprint,
                   top_buckets=top_score_buckets(family_kind), save_reference_to=path if reference is None else None)

    # -- per query ---------------------------------------------------------------------------------------

    def observe(self, raw_scores: Sequence[float] | np.ndarray) -> bool:
        """Record one query's raw scores; ``False`` (nothing recorded) when empty or not finite."""
        # One sort gives max and median (np.median alone costs several times more on a short array).
        scores = np.sort(np.asarray(raw_scores, dtype=np.float64).ravel())
        n = scores.size
        if n == 0:
            return False
        middle = float(scores[n // 2]) if n % 2 else (float(scores[n // 2 - 1]) + float(scores[n // 2])) / 2.0
        row = (float(scores[-1]), float(np.add.reduce(scores)) / n, middle)
        if not all(math.isfinite(x) for x in row):
            with self._lock:
                self._skipped += 1
            return False
        bucket = bisect.bisect_left(self.buckets, row[0])  # Prometheus buckets are upper bounds: value <= le
        with self._lock:
            self._top_counts[bucket] += 1
            self._top_sum += row[0]
            if self._reference is None:
                assert self._filling is not None
                self._filling[self._filled] = row
                self._filled += 1
                if self._filled == len(self._filling):
                    self._reference = ReferenceSnapshot(self._filling, self.fingerprint)
                    self._filling = None
                    if self._save_to is not None:
                        self._saver = threading.Thread(target=self._save_collected, name="rerankd-drift-save",
                                                       daemon=True)
                        self._saver.start()
                return True
            self._window[self._next] = row
            self._next = (self._next + 1) % self.window_size
            self._held = min(self._held + 1, self.window_size)
        return True

    # -- at scrape time ----------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Every number the monitor reports, computed now from a copy of the windows.

        Keys: ``reference`` (``queries``, ``size``, ``complete``, ``source``: ``stream`` | ``file``),
        ``current`` (``queries``, ``size``), ``min_samples``, ``skipped_queries``, ``top_score``
        (``buckets``: upper bounds; ``counts``: per bucket, not cumulative, the last one +Inf; ``count``;
        ``sum``), and ``statistics``: for each of ``max``, ``mean``, ``median`` a dict holding
        ``reference`` (``mean``, ``sd``, ``quantiles``) once the reference is complete, ``current``
        (the same) once the current window holds ``min_samples`` queries, and when both are there
        ``mean_shift``, ``psi``, ``ks_statistic``, ``ks_pvalue``. Quantile keys are ``"0.1"`` etc.
        """
        with self._lock:
            reference = self._reference
            current = self._window[: self._held].copy()
            filled = self._filled
            counts = list(self._top_counts)
            top_sum = self._top_sum
            skipped = self._skipped
        enough = len(current) >= self.min_samples
        statistics: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(STATISTICS):
            entry: dict[str, Any] = {}
            ref = reference.values[:, i] if reference is not None else None
            cur = current[:, i]
            if ref is not None:
                entry["reference"] = _summary(ref)
            if enough:
                entry["current"] = _summary(cur)
            if ref is not None and enough:
                d, p = stats.ks_2samp(ref, cur)
                entry.update(mean_shift=stats.mean_shift(ref, cur), psi=stats.psi(ref, cur), ks_statistic=d, ks_pvalue=p)
            statistics[name] = entry
        return {
            "reference": {"queries": reference.queries if reference is not None else filled,
                          "size": self.reference_size, "complete": reference is not None, "source": self._source},
            "current": {"queries": len(current), "size": self.window_size},
            "min_samples": self.min_samples,
            "skipped_queries": skipped,
            "statistics": statistics,
            "top_score": {"buckets": list(self.buckets), "counts": counts, "count": sum(counts), "sum": top_sum},
        }

    # -- the reference -----------------------------------------------------------------------------------

    def reference(self) -> ReferenceSnapshot | None:
        """The complete reference window, or ``None`` while it is still being collected."""
        with self._lock:
            return self._reference

    def save_reference(self, path: str | os.PathLike[str]) -> Path:
        """Write the complete reference to ``path`` (JSON with the fingerprint); returns the path.

        Raises:
            InputError: the reference window is not complete yet.
        """
        with self._lock:
            reference, filled = self._reference, self._filled
        if reference is None:
            raise InputError(f"the drift reference holds {filled} of {self.reference_size} queries; it can be saved "
                             "once complete")
        return save_reference(reference, path)

    def wait_for_save(self, timeout: float | None = None) -> Path | None:
        """Wait for the background write of a collected reference; the path written, or ``None`` if none was
        (not complete yet, no file configured, or the write failed: that is logged)."""
        with self._lock:
            saver = self._saver
        if saver is not None:
            saver.join(timeout)
        return self._saved

    def _save_collected(self) -> None:
        assert self._save_to is not None and self._reference is not None
        try:
            self._saved = save_reference(self._reference, self._save_to)
            log.info("drift reference of %d queries saved to %s", self._reference.queries, self._saved)
        except OSError as exc:  # a full disk or a read-only path must not touch serving; the monitor keeps working
            log.warning("could not save the drift reference to %s: %s", self._save_to, exc)


def _summary(values: np.ndarray) -> dict[str, Any]:
    quantiles = np.quantile(values, QUANTILES)
    return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)),
            "quantiles": {str(q): float(v) for q, v in zip(QUANTILES, quantiles, strict=True)}}


def monitors_for(settings: DriftSettings, models: Mapping[str, tuple[Mapping[str, str], str]]) -> dict[str, DriftMonitor]:
    """One monitor per served model (none when drift is off); ``models`` maps served name →
    ``(fingerprint, family kind)``.

    Example:
        >>> sorted(monitors_for(DriftSettings(), {"a": ({"revision": "1"}, "bi-encoder")}))
        ['a']
        >>> monitors_for(DriftSettings(enabled=False), {"a": ({}, "bi-encoder")})
        {}
    """
    if not settings.enabled:
        return {}
    return {name: DriftMonitor.from_settings(settings, name, fingerprint=fingerprint, family_kind=kind,
                                             served_models=len(models))
            for name, (fingerprint, kind) in models.items()}


__all__ = ["COSINE_BUCKETS", "LOGIT_BUCKETS", "QUANTILES", "DriftMonitor", "monitors_for", "top_score_buckets"]
