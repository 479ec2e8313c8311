"""What an evaluation leaves on disk: TREC run files, metrics JSON, a markdown table and PNG charts.

Layout of ``out_dir``::

    runs/<label>.trec     first stage and every reranked run (TREC format)
    metrics.json          settings, means, per-query values and paired tests
    report.md             the table (quality and pairs/s side by side) and the tests
    quality.png           every metric, first stage against each reranker
    tradeoff.png          primary metric against pairs/s (when speeds were measured)
    scores/<label>.jsonl  the resumable score caches (see rerank_run)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rerankd._optional import require
from rerankd.evaluation.compare import Evaluation, SystemResult, slug
from rerankd.evaluation.datasets import write_trec_run

PRIMARY = "ndcg@10"


def write_report(evaluation: Evaluation, out_dir: str | Path, charts: bool = True) -> dict[str, Path]:
    """Write every output; returns name → path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for system in [evaluation.first_stage, *evaluation.rerankers]:
        tag = slug(system.label)
        paths[f"run:{system.label}"] = write_trec_run(system.run, out / "runs" / f"{tag}.trec", tag=tag)
    paths["metrics"] = out / "metrics.json"
    paths["metrics"].write_text(json.dumps(as_json(evaluation), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["report"] = out / "report.md"
    paths["report"].write_text(markdown(evaluation), encoding="utf-8")
    if charts:
        paths["quality"] = quality_chart(evaluation, out / "quality.png")
        if any(s.pairs_per_s for s in evaluation.rerankers):
            paths["tradeoff"] = tradeoff_chart(evaluation, out / "tradeoff.png")
    return paths


def _system_json(system: SystemResult) -> dict[str, Any]:
    return {
        "label": system.label,
        "settings": system.settings,
        "queries": system.result.queries,
        "mean": system.result.mean,
        "pairs_per_s": system.pairs_per_s,
        "tests": {against: {m: t.as_dict() for m, t in tests.items()} for against, tests in system.tests.items()},
        "per_query": system.result.per_query,
    }


def as_json(evaluation: Evaluation) -> dict[str, Any]:
    return {
        "dataset": evaluation.dataset,
        "split": evaluation.split,
        "queries": evaluation.queries,
        "depth": evaluation.depth,
        "metrics": evaluation.metrics,
        "speed": evaluation.speed_note,
        "first_stage": _system_json(evaluation.first_stage),
        "rerankers": [_system_json(s) for s in evaluation.rerankers],
    }


def primary_metric(evaluation: Evaluation) -> str:
    return PRIMARY if PRIMARY in evaluation.metrics else evaluation.metrics[0]


def markdown_table(evaluation: Evaluation) -> str:
    """One row per system: every metric, pairs/s, and the primary metric's change over the first stage."""
    primary = primary_metric(evaluation)
    head = ["system", *evaluation.metrics, "pairs/s", f"Δ {primary} vs first stage (95% CI, p t/bootstrap)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for system in [evaluation.first_stage, *evaluation.rerankers]:
        speed = f"{system.pairs_per_s:.1f}" if system.pairs_per_s else "—"
        test = system.tests.get(evaluation.first_stage.label, {}).get(primary)
        cells = [system.label, *(f"{system.result.mean[m]:.4f}" for m in evaluation.metrics), speed,
                 test.summary() if test else "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown(evaluation: Evaluation) -> str:
    primary = primary_metric(evaluation)
    parts = [
        f"# {evaluation.dataset or 'dataset'} ({evaluation.split}): {evaluation.queries} judged queries, "
        f"top-{evaluation.depth} of {evaluation.first_stage.label} reranked\n\n",
        markdown_table(evaluation),
        f"\nSpeed: {evaluation.speed_note}.\n",
    ]
    if len(evaluation.rerankers) > 1:
        base = evaluation.rerankers[0].label
        parts.append(f"\n## Against {base} ({primary})\n\n| system | Δ (95% CI, p t/bootstrap) |\n|---|---|\n")
        for system in evaluation.rerankers[1:]:
            parts.append(f"| {system.label} | {system.tests[base][primary].summary()} |\n")
    return "".join(parts)


def _pyplot() -> Any:
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")  # files only: no display on servers and CI
    return require("matplotlib.pyplot")


def quality_chart(evaluation: Evaluation, path: Path) -> Path:
    """Grouped bars: each metric, first stage next to every reranker."""
    plt = _pyplot()
    systems = [evaluation.first_stage, *evaluation.rerankers]
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(evaluation.metrics) * max(1, len(systems) / 2)), 4.2))
    for i, system in enumerate(systems):
        xs = [m + (i - (len(systems) - 1) / 2) * width for m in range(len(evaluation.metrics))]
        bars = ax.bar(xs, [system.result.mean[m] for m in evaluation.metrics], width, label=system.label)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    ax.set_xticks(range(len(evaluation.metrics)), [m.upper() for m in evaluation.metrics])
    ax.set_ylim(0, 1.1)
    ax.set_title(f"{evaluation.dataset} ({evaluation.split}, {evaluation.queries} queries): first stage vs reranked")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def tradeoff_chart(evaluation: Evaluation, path: Path) -> Path:
    """Quality against speed: one point per reranker, the first stage as a dashed line."""
    plt = _pyplot()
    primary = primary_metric(evaluation)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for system in evaluation.rerankers:
        if not system.pairs_per_s:
            continue
        # a legend, not annotations: candidates of one model sit close together and labels would overlap
        ax.scatter(system.pairs_per_s, system.result.mean[primary], s=40, label=system.label)
    ax.axhline(evaluation.first_stage.result.mean[primary], linestyle="--", color="grey",
               label=f"first stage ({evaluation.first_stage.label})")
    ax.set_xscale("log")
    ax.set_xlabel("pairs per second (log)")
    ax.set_ylabel(primary.upper())
    ax.set_title(f"{evaluation.dataset}: quality vs speed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
