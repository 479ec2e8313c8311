"""``rerankd quantize``: write a model in int8, int4, bf16 or fp16 (or, on CUDA, 4/8-bit or fp8 weights) with a report (report.json + report.md) of size, peak
memory, speed and quality against the original; refuses (writes nothing) when NDCG@10 on --eval drops more than
--max-ndcg-drop, unless --force."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("quantize", help="quantize a model and report what it costs in quality", description=__doc__)
    parser.add_argument("--model", "-m", default=None, help="model directory or hub id (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    parser.add_argument("--to", required=True, choices=["int8", "int4", "bf16", "fp16", "bnb-4bit", "bnb-8bit",
                                                          "int8-weight", "fp8"],
                        help="int8: ONNX dynamic int8; int4: ONNX 4-bit block-wise weights (smallest; both onnx backend); "
                             "bf16/fp16: torch checkpoint in that dtype; bnb-4bit/bnb-8bit/int8-weight/fp8: weights "
                             "quantized on CUDA by transformers (needs --device cuda)")
    parser.add_argument("--device", default="cpu", help="where both sides are measured: cpu, cuda or cuda:N "
                                                        "(cuda adds peak GPU memory to the report)")
    parser.add_argument("--out", "-o", required=True, help="directory to write (must not exist or be empty)")
    parser.add_argument("--eval", default=None, metavar="DATASET", help="BEIR folder: compare NDCG@10/MRR@10 reranking its BM25 top-k")
    parser.add_argument("--split", default="test", help="qrels split of DATASET")
    parser.add_argument("--eval-queries", type=int, default=50, help="queries of DATASET to rerank")
    parser.add_argument("--candidates", type=int, default=30, help="BM25 candidates per query")
    parser.add_argument("--max-ndcg-drop", type=float, default=0.01, help="largest NDCG@10 drop allowed before refusing")
    parser.add_argument("--force", action="store_true", help="write the model even when the NDCG@10 bound is broken")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rerankd.cli import print_json
    from rerankd.quantize import quantize_model

    report = quantize_model(args.model, args.to, args.out, eval_dataset=args.eval, split=args.split,
                            max_ndcg_drop=args.max_ndcg_drop, force=args.force, eval_queries=args.eval_queries,
                            candidates=args.candidates, revision=args.revision, device=args.device)
    print_json(report)
    return 0
