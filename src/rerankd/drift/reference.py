"""A drift reference on disk: the per-query statistics of the reference window, and the fingerprint of
the model that produced them (a reference of another model would report drift that is not there).

The file is JSON::

    {"format": "rerankd-drift-reference", "version": 1, "created": "2025-01-01T00:00:00Z",
     "fingerprint": {"revision": "...", "family": "...", ...},
     "queries": 1000, "statistics": {"max": [...], "mean": [...], "median": [...]}}
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rerankd.errors import InputError

FORMAT = "rerankd-drift-reference"
VERSION = 1
#: The per-query statistics, in the column order the monitor stores them.
STATISTICS = ("max", "mean", "median")


@dataclass(frozen=True)
class ReferenceSnapshot:
    """The reference window: one row per query, one column per statistic of :data:`STATISTICS`.

    Example:
        >>> ref = ReferenceSnapshot(np.zeros((3, 3)), {"revision": "abc"})
        >>> ref.queries
        3
    """

    values: np.ndarray
    fingerprint: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(STATISTICS):
            raise InputError(f"a drift reference holds one row of {len(STATISTICS)} statistics {STATISTICS} per "
                             f"query; got an array of shape {values.shape}")
        if not np.isfinite(values).all():
            raise InputError("a drift reference holds finite scores only; this one has NaN or infinite values")
        values = values.copy()
        values.flags.writeable = False
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "fingerprint", {str(k): str(v) for k, v in self.fingerprint.items()})

    @property
    def queries(self) -> int:
        return int(self.values.shape[0])

    def column(self, statistic: str) -> np.ndarray:
        return self.values[:, STATISTICS.index(statistic)]


def fingerprint_difference(expected: Mapping[str, str], found: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """``(field, found, expected)`` for every field whose value differs (``"(absent)"`` where missing)."""
    fields = sorted(set(expected) | set(found))
    absent = "(absent)"
    return [(f, str(found.get(f, absent)), str(expected.get(f, absent)))
            for f in fields if str(found.get(f, absent)) != str(expected.get(f, absent))]


def check_fingerprint(where: str, found: Mapping[str, str], expected: Mapping[str, str]) -> None:
    """Raise :class:`InputError` naming each differing field when ``found`` is not ``expected``."""
    differences = fingerprint_difference(expected, found)
    if differences:
        named = "; ".join(f"{f!r} is {a!r} there but {b!r} here" for f, a, b in differences)
        raise InputError(f"the drift reference {where} was saved for another model configuration: {named}. "
                         "Delete it (a new reference is collected from the first queries) or point "
                         "--drift-reference at this model's own file")


def save_reference(snapshot: ReferenceSnapshot, path: str | os.PathLike[str]) -> Path:
    """Write ``snapshot`` to ``path`` atomically (a reader never sees half a file); returns the path."""
    target = Path(path)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "fingerprint": dict(snapshot.fingerprint),
        "queries": snapshot.queries,
        # repr-exact floats: a loaded reference gives the very statistics the saved one did.
        "statistics": {name: [float(x) for x in snapshot.column(name)] for name in STATISTICS},
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(payload, out)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_reference(path: str | os.PathLike[str], fingerprint: Mapping[str, str]) -> ReferenceSnapshot:
    """Read a reference saved by :func:`save_reference`, refusing one saved for another ``fingerprint``.

    Raises:
        InputError: the file is missing or malformed, or a fingerprint field differs (the message names it).

    Example:
        >>> load_reference("ref.json", {"revision": "abc"})         # doctest: +SKIP
    """
    source = Path(path)
    try:
        payload = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"no drift reference at {source}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"the drift reference {source} cannot be read as JSON ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{source} is not a rerankd drift reference (no \"format\": {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise InputError(f"the drift reference {source} has version {payload.get('version')!r}; this rerankd reads "
                         f"version {VERSION}. Delete it to collect a new one")
    found = payload.get("fingerprint")
    if not isinstance(found, dict):
        raise InputError(f"the drift reference {source} has no model fingerprint")
    check_fingerprint(str(source), found, fingerprint)
    return ReferenceSnapshot(_columns(source, payload), found)


def _columns(source: Path, payload: dict[str, Any]) -> np.ndarray:
    stats = payload.get("statistics")
    if not isinstance(stats, dict) or any(not isinstance(stats.get(name), list) for name in STATISTICS):
        raise InputError(f"the drift reference {source} lacks a list of values for each of {STATISTICS}")
    lengths = {name: len(stats[name]) for name in STATISTICS}
    if len(set(lengths.values())) != 1 or lengths["max"] != payload.get("queries"):
        raise InputError(f"the drift reference {source} is inconsistent: {payload.get('queries')!r} queries but "
                         f"lists of lengths {lengths}")
    try:
        values = np.array([[float(stats[name][i]) for name in STATISTICS] for i in range(lengths["max"])],
                          dtype=np.float64).reshape(-1, len(STATISTICS))
    except (TypeError, ValueError):
        raise InputError(f"the drift reference {source} holds values that are not numbers") from None
    if not np.isfinite(values).all():
        raise InputError(f"the drift reference {source} holds NaN or infinite values")
    return values


__all__ = ["FORMAT", "STATISTICS", "VERSION", "ReferenceSnapshot", "check_fingerprint", "fingerprint_difference",
           "load_reference", "save_reference"]
