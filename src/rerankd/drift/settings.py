"""The drift monitor's knobs, as one frozen value (the CLI fills it from ``--drift*``; nothing reads env here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rerankd.errors import InputError

#: Windows are sorted at every scrape; past this a scrape spends tens of milliseconds per model.
MAX_WINDOW = 100_000
#: PSI bins the reference into deciles: fewer samples than this cannot fill them.
MIN_SAMPLES_FLOOR = 10
MODEL_PLACEHOLDER = "{model}"


@dataclass(frozen=True)
class DriftSettings:
    """Whether and how each served model's score distribution is watched.

    Attributes:
        enabled: watch scores (on by default; ``--no-drift`` turns it off).
        reference_size: queries in the reference window: the first this many after start, unless a
            reference file is loaded (it keeps the size it was saved with). 1000 halves the reference's
            part of the sampling noise (the 1/n_ref terms) against 500 and costs 24 KB per model; at one
            query a second it is collected in 17 minutes.
        window_size: the rolling current window: the last this many queries. 500 answers a shift within
            500 queries while its noise keeps PSI near 0.03 when nothing changed.
        min_samples: queries the current window needs before the comparisons are shown (the reference
            must be complete). PSI's noise floor is about ``9 * (1/reference + 1/current)``: 0.05 at
            200 against 1000, but 0.2 (the alert threshold) at 50, hence 200.
        reference_file: JSON reference (see :mod:`rerankd.drift.reference`): loaded when it exists and
            matches the model's fingerprint, otherwise written once the reference window is complete.
            With several models it must contain ``{model}``, replaced by the served name ('/' → '--').

    Example:
        >>> DriftSettings(window_size=300, min_samples=100).window_size
        300
        >>> DriftSettings(min_samples=600)
        Traceback (most recent call last):
        ...
        rerankd.errors.InputError: drift min_samples (600) must be at most window_size (500) ...
    """

    enabled: bool = True
    reference_size: int = 1000
    window_size: int = 500
    min_samples: int = 200
    reference_file: str | None = None

    def __post_init__(self) -> None:
        for name in ("reference_size", "window_size", "min_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f"drift {name} must be a whole number of queries, got {value!r}")
        if self.min_samples < MIN_SAMPLES_FLOOR:
            raise InputError(f"drift min_samples must be at least {MIN_SAMPLES_FLOOR} (PSI bins the reference into "
                             f"deciles), got {self.min_samples}")
        for name in ("reference_size", "window_size"):
            value = getattr(self, name)
            if value < self.min_samples:
                raise InputError(f"drift min_samples ({self.min_samples}) must be at most {name} ({value}) "
                                 "(--drift-min-samples)")
            if value > MAX_WINDOW:
                raise InputError(f"drift {name} is {value} queries but at most {MAX_WINDOW} are kept (every scrape "
                                 "sorts the windows)")
        if self.reference_file is not None and not str(self.reference_file).strip():
            raise InputError("drift reference_file is empty; leave it unset to collect the reference in memory")

    def reference_path(self, model: str, served_models: int = 1) -> Path | None:
        """The reference file of served model ``model`` (``None`` when no file is configured).

        Example:
            >>> DriftSettings(reference_file="refs/{model}.json").reference_path("BAAI/bge-reranker-base", 2)
            PosixPath('refs/BAAI--bge-reranker-base.json')
        """
        if self.reference_file is None:
            return None
        template = str(self.reference_file)
        if MODEL_PLACEHOLDER not in template:
            if served_models > 1:
                raise InputError(f"{served_models} models are served but the drift reference file {template!r} has "
                                 f"no {MODEL_PLACEHOLDER} placeholder; each model needs its own reference "
                                 f"(e.g. --drift-reference 'refs/{MODEL_PLACEHOLDER}.json')")
            return Path(template)
        return Path(template.replace(MODEL_PLACEHOLDER, model.replace("/", "--")))


__all__ = ["DriftSettings", "MAX_WINDOW", "MIN_SAMPLES_FLOOR"]
