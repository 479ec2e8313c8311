"""Real first-stage and rerank quality on the shared BEIR-layout data (not a CI test; minutes of CPU).

For cranfield (test qrels), vaswani (test qrels) and scifact (TRAIN qrels: the only split shared):

* BM25 (bm25s) without stemming and with English stemming + stopwords,
* dense retrieval with the bundled all-MiniLM-L6-v2 bi-encoder,
* the same bi-encoder reranking the stemmed-BM25 top-100,

each with NDCG@10, MRR@10 and Recall@100 (trec_eval semantics, see rerankd.evaluation.metrics).

The bi-encoder reranking is computed from the cached corpus embeddings (``DenseRetriever.rescore``);
``--check-queries`` queries of each set are also reranked through the engine path
(``rerank_run.rerank``, what ``rerankd eval run`` does) and the two must agree, so the shortcut is
checked, not assumed. Embeddings are cached in ``--cache-dir``: a second run only retrieves.

    python benchmarks/eval_real.py --dtype bf16 --out runs/eval-real
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from rerankd.evaluation.datasets import load_beir
from rerankd.evaluation.first_stage import BM25Retriever, DenseRetriever
from rerankd.evaluation.metrics import evaluate
from rerankd.evaluation.rerank_run import rerank
from rerankd.evaluation.stats import paired_test

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = (("cranfield", "test"), ("vaswani", "test"), ("scifact", "train"))
METRICS = ("ndcg@10", "mrr@10", "recall@100")


def one_set(name: str, split: str, args: argparse.Namespace) -> dict[str, Any]:
    data = load_beir(Path(args.data) / name, split)
    rows: dict[str, Any] = {}
    timings: dict[str, float] = {}

    def record(label: str, run: dict[str, dict[str, float]]) -> Any:
        result = evaluate(data.qrels, run, METRICS)
        rows[label] = result
        return result

    start = time.perf_counter()
    record("BM25 (no stemming)", BM25Retriever(data.corpus, stemmer=None, stopwords=None, cache_dir=args.cache_dir).search(data.queries, 100))
    bm25_run = BM25Retriever(data.corpus, stemmer="english", stopwords="en", cache_dir=args.cache_dir).search(data.queries, 100)
    record("BM25 (English stemming + stopwords)", bm25_run)
    timings["bm25_s"] = time.perf_counter() - start

    start = time.perf_counter()
    dense = DenseRetriever(data.corpus, cache_dir=args.cache_dir, dtype=args.dtype, progress=True)
    timings["embed_or_load_corpus_s"] = time.perf_counter() - start
    record("dense all-MiniLM-L6-v2", dense.search(data.queries, 100))
    reranked = dense.rescore(data.queries, bm25_run)
    record("BM25 top-100 → all-MiniLM-L6-v2 rerank", reranked)

    check: dict[str, Any] = {}
    if args.check_queries:
        qids = list(data.queries)[: args.check_queries]
        start = time.perf_counter()
        outcome = rerank(dense.reranker, {q: data.queries[q] for q in qids}, data.corpus, {q: bm25_run[q] for q in qids},
                         depth=100, progress=True, label=f"{name} engine check")
        timings["engine_check_s"] = time.perf_counter() - start
        delta = max(abs(outcome.run[q][d] - reranked[q][d]) for q in qids for d in outcome.run[q])
        a = evaluate(data.qrels, outcome.run, METRICS).mean
        b = evaluate(data.qrels, {q: reranked[q] for q in qids}, METRICS).mean
        check = {"queries": len(qids), "max_abs_score_delta": delta,
                 "ndcg@10_engine": a["ndcg@10"], "ndcg@10_rescore": b["ndcg@10"]}
        if abs(a["ndcg@10"] - b["ndcg@10"]) > 1e-3:
            raise SystemExit(f"{name}: engine rerank and rescore disagree: {check}")
    test = paired_test(rows["BM25 (English stemming + stopwords)"], rows["BM25 top-100 → all-MiniLM-L6-v2 rerank"], "ndcg@10")
    return {
        "dataset": name, "split": split, "queries": len(data.queries), "docs": len(data.corpus),
        "rows": {label: r.mean for label, r in rows.items()},
        "rerank_vs_bm25_ndcg@10": test.as_dict(), "engine_check": check, "timings_s": timings,
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| dataset (split, queries) | system | NDCG@10 | MRR@10 | Recall@100 |", "|---|---|---|---|---|"]
    for res in results:
        for label, mean in res["rows"].items():
            lines.append(f"| {res['dataset']} ({res['split']}, {res['queries']}) | {label} | "
                         f"{mean['ndcg@10']:.4f} | {mean['mrr@10']:.4f} | {mean['recall@100']:.4f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--sets", default=",".join(n for n, _ in SETS), help="comma-separated subset of the three")
    parser.add_argument("--dtype", default="bf16", help="bi-encoder precision (bf16 for speed on AVX512-BF16 CPUs)")
    parser.add_argument("--cache-dir", default=".rerankd-cache/eval", help="BM25 indexes and corpus embeddings")
    parser.add_argument("--check-queries", type=int, default=5, help="queries per set also reranked through the engine")
    parser.add_argument("--out", default="runs/eval-real", help="folder for results.json and table.md")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 is faster on a busy shared machine)")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    wanted = set(args.sets.split(","))
    results = [one_set(name, split, args) for name, split in SETS if name in wanted]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"dtype": args.dtype, "torch_threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    text = table(results)
    (out / "table.md").write_text(text + "\n")
    print(text)
    for res in results:
        t = res["rerank_vs_bm25_ndcg@10"]
        print(f"{res['dataset']}: rerank vs stemmed BM25 NDCG@10 {t['delta']:+.4f} [{t['ci_low']:+.4f}, {t['ci_high']:+.4f}] "
              f"p={t['t_p']:.4g} (t) / {t['bootstrap_p']:.4g} (bootstrap); engine check {res['engine_check']}; "
              f"timings {res['timings_s']}")
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
