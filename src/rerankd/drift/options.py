"""``rerankd serve``'s drift flags, for the serve command to add to its parser (it reads argv, not this).

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_drift_arguments(parser)
    >>> drift_settings_from(parser.parse_args(["--drift-window", "300", "--drift-min-samples", "100"])).window_size
    300
"""

from __future__ import annotations

import argparse

from rerankd.drift.settings import DriftSettings


def add_drift_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-drift``, ``--drift-reference``, ``--drift-reference-size``, ``--drift-window``, ``--drift-min-samples``.

    Drift is on by default, so the flag is the negative one (a store-true flag also takes
    ``RERANKD_NO_DRIFT=1`` from the environment, as every other rerankd flag does).
    """
    defaults = DriftSettings()
    group = parser.add_argument_group("score drift (per model, exported on /metrics as rerankd_drift_*)")
    group.add_argument("--no-drift", action="store_true", help="do not watch the score distribution")
    group.add_argument("--drift-reference", default=None, metavar="FILE",
                       help="JSON reference of the model's scores: loaded when it exists (and must match the model's "
                            "fingerprint), otherwise written once the first queries are collected; with several "
                            "models it must contain {model}. Default: kept in memory only")
    group.add_argument("--drift-reference-size", type=int, default=defaults.reference_size, metavar="QUERIES",
                       help="queries after start that form the reference window (without --drift-reference)")
    group.add_argument("--drift-window", type=int, default=defaults.window_size, metavar="QUERIES",
                       help="the rolling window of the latest queries compared with the reference")
    group.add_argument("--drift-min-samples", type=int, default=defaults.min_samples, metavar="QUERIES",
                       help="queries the rolling window needs before the drift gauges are shown")


def drift_settings_from(args: argparse.Namespace) -> DriftSettings:
    """The :class:`DriftSettings` the parsed flags ask for (raises InputError for bad values)."""
    return DriftSettings(enabled=not args.no_drift, reference_size=args.drift_reference_size,
                         window_size=args.drift_window, min_samples=args.drift_min_samples,
                         reference_file=args.drift_reference)


__all__ = ["add_drift_arguments", "drift_settings_from"]
