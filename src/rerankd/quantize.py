"""``quantize_model``: write a model in int8 / int4 / bf16 / fp16 with a report of what that costs and gains.

int8 is an ONNX export with dynamic int8, int4 one with 4-bit block-wise weights (both on the ONNX
Runtime backend); bf16 and fp16 are the torch checkpoint in that dtype (torch backend; ONNX
Runtime's CPU provider has no bf16 kernels). The
report compares the original (torch fp32) and the quantized model side by side: size on disk, peak
RSS and pairs/s on the rerank-100 workload (each side measured in its own subprocess, so one side's
memory is not the other's), and the agreement of their scores (Pearson, Spearman, mean |Δ|, top-10
overlap per query). With a BEIR dataset, both rerank the BM25 top-k of its queries and NDCG@10 /
MRR@10 are compared; if NDCG@10 drops by more than the bound nothing is written
(:class:`~rerankd.errors.QualityBoundError`) unless ``force``.

Example:
    >>> report = quantize_model("BAAI/bge-reranker-v2-m3", "int8", "bge-int8", eval_dataset="data/scifact")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rerankd.errors import InputError, QualityBoundError

TARGETS = ("int8", "int4", "bf16", "fp16", "bnb-4bit", "bnb-8bit", "int8-weight", "fp8")
_ONNX_TARGETS = ("int8", "int4")
#: Weights quantized by transformers' quantization configs, on CUDA (rerankd.gpu_quantization).
_GPU_TARGETS = ("bnb-4bit", "bnb-8bit", "int8-weight", "fp8")


def quantize_model(
    model: str | Path | None,
    to: str,
    out: str | Path,
    *,
    eval_dataset: str | Path | None = None,
    split: str = "test",
    max_ndcg_drop: float = 0.01,
    force: bool = False,
    eval_queries: int = 50,
    candidates: int = 30,
    revision: str | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Quantize ``model`` to ``to`` into ``out`` and return the report (also written as report.json/.md).

    ``device``: where both sides are measured (``cuda`` adds their peak GPU memory to the report);
    the GPU targets (bnb-4bit, bnb-8bit, int8-weight, fp8) need ``cuda``.
    """
    from rerankd.families import load_family
    from rerankd.hub import resolve_model
    from rerankd.measure import weights_size_bytes

    if to not in TARGETS:
        raise InputError(f"cannot quantize to {to!r}; use one of {', '.join(TARGETS)}")
    from rerankd.device import resolve_device

    device = resolve_device(device)  # a missing GPU is refused before anything is loaded
    if to in _GPU_TARGETS:
        from rerankd.gpu_quantization import check_quantization

        check_quantization(to, device)
    elif to in _ONNX_TARGETS and device != "cpu":
        raise InputError(f"--to {to} is an ONNX Runtime CPU model; measure it with --device cpu")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists and is not empty; pick another --out or remove it")
    model_dir, name = resolve_model(str(model) if model is not None else None, revision)
    family = load_family(model_dir)
    quality_sets = _quality_sets(eval_dataset, split, eval_queries, candidates)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".rerankd-quantize-", dir=out.parent) as work:
        staged = Path(work) / "model"
        write_quantized(model_dir, family, to, staged, device)
        backend = "onnx" if to in _ONNX_TARGETS else "torch"
        sides = {
            "original": {"path": str(model_dir), "backend": "torch", "dtype": "fp32", "size_bytes": weights_size_bytes(model_dir)},
            "quantized": {"path": str(staged), "backend": backend, "dtype": "bf16" if to in _GPU_TARGETS else to,
                          "size_bytes": weights_size_bytes(staged)},
        }
        if to in _GPU_TARGETS:
            sides["quantized"]["quantization"] = to
        scores = {}
        for side, spec in sides.items():
            result = measure_in_subprocess(spec["path"], spec["backend"], spec["dtype"], quality_sets.sets, device)
            scores[side] = result.pop("scores")
            spec.update(result)
        report = build_report(name, to, sides, quality_sets, scores, max_ndcg_drop, force)
        drop = report["quality"].get("ndcg@10_drop")
        if drop is not None and drop > max_ndcg_drop and not force:
            raise QualityBoundError(
                f"{to} lowers NDCG@10 on {Path(str(eval_dataset)).name} by {drop:.4f} "
                f"({report['quality']['ndcg@10']['original']:.4f} → {report['quality']['ndcg@10']['quantized']:.4f}), "
                f"more than the bound {max_ndcg_drop}; nothing was written. Raise --max-ndcg-drop, pick another precision, or pass --force"
            )
        report["quantized"]["path"] = str(out)
        (staged / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (staged / "report.md").write_text(report_markdown(report), encoding="utf-8")
        if out.exists():
            out.rmdir()
        staged.rename(out)
    return report


def write_quantized(model_dir: Path, family: Any, to: str, out: Path, device: str = "cpu") -> None:
    """The quantized model directory: an int8 or int4 ONNX export, the torch checkpoint in bf16/fp16,
    or (on CUDA) the checkpoint quantized by transformers with its ``quantization_config``."""
    if to in _ONNX_TARGETS:
        from rerankd.export import export_model

        export_model(str(model_dir), out, precision=to)
        return
    from rerankd._optional import require
    from rerankd.compat import dtype_kwarg
    from rerankd.device import normalize_dtype, torch_dtype
    from rerankd.export import copy_model_files

    transformers = require("transformers")
    archs = [str(a) for a in family.config.get("architectures") or []]
    if family.kind == "bi-encoder":
        loader = transformers.AutoModel
    elif any(a.endswith("ForCausalLM") for a in archs):
        loader = transformers.AutoModelForCausalLM
    else:
        loader = transformers.AutoModelForSequenceClassification
    options: dict[str, Any] = dtype_kwarg(torch_dtype(normalize_dtype(to if to not in _GPU_TARGETS else "bf16") or "float32"))
    if to in _GPU_TARGETS:
        from rerankd.gpu_quantization import quantization_config

        options["quantization_config"] = quantization_config(to, family.head.kind, options.get("dtype", options.get("torch_dtype")))
        options["device_map"] = {"": device}
    weights = loader.from_pretrained(str(model_dir), **options)
    out.mkdir(parents=True)
    copy_model_files(model_dir, out)
    weights.save_pretrained(str(out))  # rewrites config.json with the new dtype (and quantization_config)


def measure_in_subprocess(path: str, backend: str, dtype: str, sets: list[tuple[str, list[str]]],
                          device: str = "cpu") -> dict[str, Any]:
    """Load one side in a fresh interpreter; its pairs/s on rerank-100, peak RSS (and peak GPU memory on
    CUDA) and scores on ``sets``."""
    request = json.dumps({"path": path, "backend": backend, "dtype": dtype, "sets": sets, "device": device})
    proc = subprocess.run([sys.executable, "-m", "rerankd.quantize"], input=request, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("{")), None)
    if proc.returncode != 0 or line is None:
        from rerankd.errors import InferenceError

        raise InferenceError(f"measuring {backend} {dtype} at {path} failed: {proc.stderr.strip()[-800:]}")
    return json.loads(line)


def _measure_child() -> None:
    """Child side of :func:`measure_in_subprocess` (reads the request on stdin, prints JSON)."""
    from rerankd.engine import Reranker
    from rerankd.measure import pairs_per_second, peak_rss_bytes, rerank_workload

    request = json.loads(sys.stdin.read())
    dtype = None if request["dtype"] in _ONNX_TARGETS else request["dtype"]
    device = request.get("device", "cpu")
    reranker = Reranker.from_pretrained(request["path"], backend=request["backend"], dtype=dtype, device=device)
    query, documents = rerank_workload(100)
    speed = pairs_per_second(lambda: reranker.score(query, documents), len(documents), reps=2)
    scores = [reranker.score(q, docs) for q, docs in request["sets"]]
    result = {"pairs_per_s": round(speed, 3), "peak_rss_bytes": peak_rss_bytes(), "scores": scores}
    from rerankd.gpu_memory import read_device_memory

    memory = read_device_memory(device)
    if memory is not None:
        result["peak_gpu_bytes"] = memory.peak_allocated
    print(json.dumps(result))


def build_report(name: str, to: str, sides: dict[str, dict[str, Any]], quality_sets: "QualitySets",
                 scores: dict[str, list[list[float]]], bound: float, force: bool) -> dict[str, Any]:
    from rerankd.measure import compare_scores

    flat_a = [s for q in scores["original"] for s in q]
    flat_b = [s for q in scores["quantized"] for s in q]
    overall = compare_scores(flat_a, flat_b).as_dict()
    overall.pop("top10_overlap")
    per_query = [compare_scores(a, b) for a, b in zip(scores["original"], scores["quantized"])]
    quality: dict[str, Any] = {**overall, "top10_overlap_per_query": round(float(np.mean([p.top10_overlap for p in per_query])), 4),
                               "spearman_per_query_min": round(min(p.spearman for p in per_query), 4),
                               "queries": len(quality_sets.sets), "pairs": len(flat_a)}
    if quality_sets.qrels is not None:
        from rerankd.evaluation import evaluate

        for metric in ("ndcg@10", "mrr@10"):
            quality[metric] = {}
        for side in ("original", "quantized"):
            run = {qid: {doc_id: float(s) for doc_id, s in zip(ids, side_scores)}
                   for (qid, ids), side_scores in zip(quality_sets.ids, scores[side])}
            mean = evaluate(quality_sets.qrels, run, ["ndcg@10", "mrr@10"]).mean
            for metric in ("ndcg@10", "mrr@10"):
                quality[metric][side] = round(mean[metric], 6)
        quality["ndcg@10_drop"] = round(quality["ndcg@10"]["original"] - quality["ndcg@10"]["quantized"], 6)
        quality["max_ndcg_drop"] = bound
        quality["within_bound"] = quality["ndcg@10_drop"] <= bound
        quality["forced"] = force and not quality["within_bound"]
    return {"model": name, "to": to, "workload": "rerank-100 (1 query, 100 documents, lognormal lengths median 160 tokens)",
            "original": sides["original"], "quantized": sides["quantized"], "quality": quality}


def report_markdown(report: dict[str, Any]) -> str:
    o, q, quality = report["original"], report["quantized"], report["quality"]
    rows = [
        ("backend / precision", f"{o['backend']} {o['dtype']}", f"{q['backend']} {q['dtype']}"),
        ("size on disk (MiB)", f"{o['size_bytes'] / 2**20:.1f}", f"{q['size_bytes'] / 2**20:.1f}"),
        ("peak RSS (MiB)", f"{o['peak_rss_bytes'] / 2**20:.0f}", f"{q['peak_rss_bytes'] / 2**20:.0f}"),
        ("pairs/s, rerank-100", f"{o['pairs_per_s']:.2f}", f"{q['pairs_per_s']:.2f}"),
    ]
    if "peak_gpu_bytes" in o:
        rows.insert(3, ("peak GPU memory (MiB)", f"{o['peak_gpu_bytes'] / 2**20:.0f}", f"{q['peak_gpu_bytes'] / 2**20:.0f}"))
    for metric in ("ndcg@10", "mrr@10"):
        if metric in quality:
            rows.append((metric.upper(), f"{quality[metric]['original']:.4f}", f"{quality[metric]['quantized']:.4f}"))
    lines = [f"# {report['model']} → {report['to']}", "", "| | original | quantized |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", f"Score agreement over {quality['pairs']} pairs in {quality['queries']} queries: "
              f"Pearson {quality['pearson']:.4f}, Spearman {quality['spearman']:.4f} (per query min {quality['spearman_per_query_min']:.4f}), "
              f"mean |Δscore| {quality['mean_abs_delta']:.4g}, max |Δscore| {quality['max_abs_delta']:.4g}, "
              f"top-10 overlap per query {quality['top10_overlap_per_query']:.2%}."]
    if "ndcg@10_drop" in quality:
        verdict = "within" if quality["within_bound"] else "OVER"
        lines.append(f"NDCG@10 drop {quality['ndcg@10_drop']:.4f}: {verdict} the bound {quality['max_ndcg_drop']}"
                     + (" (written anyway: --force)" if quality.get("forced") else "") + ".")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class QualitySets:
    """What both sides score: (query, candidate texts) lists, and with a dataset their ids and judgments."""

    sets: list[tuple[str, list[str]]]
    ids: list[tuple[str, list[str]]]
    qrels: dict[str, dict[str, int]] | None


def _quality_sets(dataset: str | Path | None, split: str, n_queries: int, k: int) -> QualitySets:
    """The BM25 top-k of the dataset's first queries, or the built-in workload."""
    if dataset is None:
        from rerankd.measure import rerank_workload

        return QualitySets([rerank_workload(100, seed=1)], [], None)
    from rerankd.evaluation import load_beir
    from rerankd.evaluation.first_stage import BM25Retriever

    data = load_beir(dataset, split=split)
    data = data.subset(list(data.queries)[:n_queries])
    run = BM25Retriever(data.corpus).search(data.queries, k=k)
    sets, set_ids = [], []
    for qid, hits in run.items():
        ids = sorted(hits, key=lambda d: -hits[d])
        set_ids.append((qid, ids))
        sets.append((data.queries[qid], [data.corpus[d].full_text for d in ids]))
    return QualitySets(sets, set_ids, data.qrels)


if __name__ == "__main__":
    _measure_child()
