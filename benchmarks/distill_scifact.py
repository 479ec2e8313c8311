"""Teacher, students, BM25 and the bi-encoder side by side on the SciFact dev split.

The dev split is the one ``rerankd train`` makes: a fixed-seed share of the *train* queries held out
(``--dev-fraction``, ``--seed``), so no test data is touched. Every reranker reorders the same
stemmed-BM25 top-``depth`` candidates through the rerankd engine; pairs/s are measured on one fixed
slice of those pairs, the models interleaved, median of ``--repeats`` (shared cores: only the
ratios between rows of one run mean something).

    python benchmarks/distill_scifact.py --teacher runs/scifact-ce --student 3-layer=runs/scifact-s3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rerankd.training.compare import ModelRow, compare_models, metrics_of, models_table
from rerankd.training.data import ranked_ids
from rerankd.training.finetune import DataSettings, prepare_data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"))
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", action="append", default=[], help="NAME=DIR, repeatable (split at the last =, so a name may hold one)")
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--dev-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=None, help="tokens per pair for every reranker (default: each model's own)")
    parser.add_argument("--throughput-pairs", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-bi-encoder", action="store_true")
    parser.add_argument("--out", default=None, help="write the table (.md) and rows (.json) here")
    args = parser.parse_args()

    prepared = prepare_data(DataSettings(args.data, dev_fraction=args.dev_fraction, pool_depth=args.depth, eval_depth=args.depth,
                                         max_train_queries=0), args.seed)
    dev = prepared.split.dev
    candidates = {q: ranked_ids(prepared.run, q, args.depth) for q in dev}
    bm25 = metrics_of(prepared.qrels, {q: prepared.run[q] for q in dev})
    models = {"teacher": args.teacher, **dict(s.rsplit("=", 1) for s in args.student)}
    if not args.no_bi_encoder:
        models["bi-encoder (all-MiniLM-L6-v2)"] = ""
    rows = [ModelRow("BM25 (stemmed), first stage", bm25["ndcg@10"], bm25["mrr@10"], None, None, None)]
    rows += compare_models(models, prepared.texts, prepared.qrels, candidates, max_length=args.max_length,
                    throughput_pairs=args.throughput_pairs, repeats=args.repeats)
    table = models_table(rows)
    header = (f"SciFact dev split: {len(dev)} of the train queries held out (fraction {args.dev_fraction}, seed {args.seed}); "
              f"rerankers reorder stemmed-BM25 top-{args.depth}; pairs/s on {args.throughput_pairs} pairs, median of {args.repeats}.")
    print(header + "\n\n" + table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(header + "\n\n" + table + "\n", encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps([r.as_dict() for r in rows], indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
