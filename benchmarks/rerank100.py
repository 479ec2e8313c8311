"""rerank-100 on this CPU: rerankd's default path against the naive baseline, in the same run.

Usage: python benchmarks/rerank100.py [minilm xlmr qwen] [--reps 3]
Prints a markdown table: pairs/s of each, the speed-up, and the share of the bf16 GEMM ceiling.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import workload  # noqa: E402

from rerankd import Reranker  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("shapes", nargs="*", default=list(workload.SHAPES))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "rerankd-bench-models")
    args = parser.parse_args()

    ceiling = workload.gemm_ceiling("bf16")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 GEMM ceiling {ceiling / 1e9:.0f} GFLOP/s\n")
    rows = []
    for shape in args.shapes:
        model_dir = workload.build_shape(shape, args.models_dir / shape)
        reranker = Reranker.from_pretrained(str(model_dir))  # the default path: auto device, dtype and packing
        print(f"{shape}: {reranker.describe()}", flush=True)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        docs = workload.make_documents(tok, workload.doc_token_lengths(workload.docs_for(shape)))
        n = len(docs)
        flops = workload.useful_flops(model_dir, [len(s) for s in reranker.pipeline.prepare(workload.QUERY, docs).sequences])
        naive_run = workload.naive_scorer(model_dir, shape)
        times = workload.interleaved_times(
            {"rerankd": functools.partial(reranker.score, workload.QUERY, docs), "naive": functools.partial(naive_run, workload.QUERY, docs)},
            reps=args.reps,
        )
        ours, naive = times["rerankd"], times["naive"]
        del reranker, naive_run
        rows.append((shape, n, n / naive, n / ours, naive / ours, flops / ours / ceiling))
        print(f"{shape}: naive {n / naive:.2f} pairs/s, rerankd {n / ours:.2f} pairs/s, {naive / ours:.1f}x", flush=True)

    print("\n| shape | docs | naive pairs/s | rerankd pairs/s | speed-up | % of bf16 GEMM ceiling |")
    print("|---|---|---|---|---|---|")
    for shape, n, naive_ps, ours_ps, speedup, frac in rows:
        print(f"| {shape} | {n} | {naive_ps:.2f} | {ours_ps:.2f} | {speedup:.1f}× | {100 * frac:.0f}% |")


if __name__ == "__main__":
    main()
