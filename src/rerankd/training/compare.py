"""Teacher and students side by side: NDCG@10, MRR@10, pairs/s, parameters and size on disk.

Every model reranks the same first-stage candidates through the rerankd engine (what users will
run). Throughput is measured on one fixed slice of those pairs, the models interleaved and repeated
(median), because the cores are shared and a lone timing says little.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

METRICS = ("ndcg@10", "mrr@10")


@dataclass
class ModelRow:
    name: str
    ndcg10: float
    mrr10: float
    pairs_per_s: float | None
    parameters: int | None
    size_mb: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.name, "ndcg@10": self.ndcg10, "mrr@10": self.mrr10, "pairs/s": self.pairs_per_s,
                "parameters": self.parameters, "size_mb": self.size_mb}


def size_on_disk_mb(model_dir: Path) -> float:
    """Weights only, in MB: what a deployment ships."""
    from rerankd.measure import weights_size_bytes

    return weights_size_bytes(model_dir) / 1e6


def parameter_count(model_dir: Path) -> int:
    from rerankd._optional import require

    safetensors = require("safetensors")
    total = 0
    for path in Path(model_dir).rglob("*.safetensors"):
        with safetensors.safe_open(str(path), framework="numpy") as fh:
            for key in fh.keys():
                total += _prod(fh.get_slice(key).get_shape())
    return total


def _prod(shape: Sequence[int]) -> int:
    out = 1
    for n in shape:
        out *= int(n)
    return out


def rerank_run(reranker: Any, texts: Any, candidates: Mapping[str, Sequence[str]], progress: bool = False) -> dict[str, dict[str, float]]:
    qids = sorted(candidates)
    results = reranker.score_many([texts.queries[q] for q in qids], [[texts.docs[d] for d in candidates[q]] for q in qids], progress=progress)
    return {q: {d: float(s) for d, s in zip(candidates[q], r.raw)} for q, r in zip(qids, results)}


def metrics_of(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    from rerankd.evaluation.metrics import evaluate

    result = evaluate({q: dict(qrels[q]) for q in run}, {q: dict(r) for q, r in run.items()}, metrics=METRICS)
    return {m: float(result.mean[m]) for m in METRICS}


def pairs_per_second(rerankers: Mapping[str, Any], texts: Any, candidates: Mapping[str, Sequence[str]], pairs: int, repeats: int) -> dict[str, float]:
    """Pairs per second of each reranker on the same slice, interleaved, median of ``repeats``."""
    from rerankd.measure import interleaved_pairs_per_second, leading_pairs

    requests = ((texts.queries[q], [texts.docs[d] for d in candidates[q]]) for q in sorted(candidates))
    queries, doc_texts = leading_pairs(requests, pairs)
    return interleaved_pairs_per_second(dict(rerankers), queries, doc_texts, repeats)


def compare_models(
    models: Mapping[str, str],
    texts: Any,
    qrels: Mapping[str, Mapping[str, int]],
    candidates: Mapping[str, Sequence[str]],
    *,
    dtype: str | None = None,
    max_length: int | None = None,
    throughput_pairs: int = 512,
    repeats: int = 3,
    progress: bool = True,
) -> list[ModelRow]:
    """Rerank ``candidates`` with each model (name → directory or hub id) and measure it."""
    from rerankd.engine import Reranker
    from rerankd.hub import resolve_model

    loaded = {name: Reranker.from_pretrained(path or None, dtype=dtype, max_length=max_length) for name, path in models.items()}
    quality = {}
    for name, reranker in loaded.items():
        if progress:
            print(f"reranking the dev candidates with {name}", flush=True)
        quality[name] = metrics_of(qrels, rerank_run(reranker, texts, candidates, progress=progress))
    speed = pairs_per_second(loaded, texts, candidates, throughput_pairs, repeats)
    rows = []
    for name, path in models.items():
        model_dir, _ = resolve_model(path or None)
        rows.append(ModelRow(name, quality[name]["ndcg@10"], quality[name]["mrr@10"], speed[name],
                             parameter_count(model_dir), size_on_disk_mb(model_dir)))
    return rows


def models_table(rows: Sequence[ModelRow]) -> str:
    lines = ["| model | NDCG@10 | MRR@10 | pairs/s | parameters | size (MB) |", "|---|---|---|---|---|---|"]
    for r in rows:
        speed = f"{r.pairs_per_s:.1f}" if r.pairs_per_s is not None else "—"
        params = f"{r.parameters / 1e6:.1f}M" if r.parameters is not None else "—"
        size = f"{r.size_mb:.1f}" if r.size_mb is not None else "—"
        lines.append(f"| {r.name} | {r.ndcg10:.4f} | {r.mrr10:.4f} | {speed} | {params} | {size} |")
    return "\n".join(lines)
