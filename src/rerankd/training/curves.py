"""Loss and metric curves of a run, as CSV (for any tool) and PNG (for a glance)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

from rerankd._optional import require


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """One row per dict; columns in first-seen order across all rows."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(path: Path, steps: Sequence[Mapping[str, Any]], evals: Sequence[Mapping[str, Any]], title: str) -> None:
    """Training loss per step (with a moving average) on the left, dev metrics per epoch on the right."""
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if steps:
        xs = [r["step"] for r in steps]
        ys = [r["loss"] for r in steps]
        left.plot(xs, ys, alpha=0.35, label="loss")
        window = max(1, len(ys) // 50)
        if window > 1:
            smooth = [sum(ys[max(0, i - window + 1) : i + 1]) / len(ys[max(0, i - window + 1) : i + 1]) for i in range(len(ys))]
            left.plot(xs, smooth, label=f"moving mean ({window})")
        left.set_xlabel("step")
        left.set_ylabel("training loss")
        left.legend()
    metrics = [k for k in (evals[0] if evals else {}) if k not in {"epoch", "step"}]
    for name in metrics:
        right.plot([r["step"] for r in evals], [r[name] for r in evals], marker="o", label=name)
    right.set_xlabel("step")
    right.set_ylabel("dev metric")
    if metrics:
        right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
