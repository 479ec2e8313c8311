"""oneDNN linear layers against plain nn.Linear, interleaved in one process on the rerank-100 workload.

Usage: python benchmarks/onednn_linear.py [--shapes minilm xlmr qwen] [--dtypes bf16 fp32] [--reps 5]

Both engines hold the same model (weights loaded twice) and score the same documents in turns, so
machine drift hits both alike; the ratio is the figure to quote. Also prints the largest score
difference between the two, which is bf16 / fp32 rounding.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload  # noqa: E402

DOCS = {"minilm": 100, "xlmr": 20, "qwen": 10}  # fewer documents for the large shapes, as in cpu_backends.py


def compare(shape: str, dtype: str, models_dir: Path, reps: int) -> tuple[float, float, float]:
    """(pairs/s with oneDNN layers, pairs/s with plain nn.Linear, max |Δscore|) for one shape and dtype."""
    import numpy as np
    from transformers import AutoTokenizer

    from rerankd.measure import interleaved_median_seconds

    model_dir = workload.build_shape(shape, models_dir / shape)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    docs = workload.make_documents(tokenizer, workload.doc_token_lengths(workload.docs_for(shape)))[: DOCS[shape]]
    engines = {on: workload.torch_engine(model_dir, dtype, onednn=on) for on in (True, False)}
    scores = {on: np.asarray(engine.score(workload.QUERY, docs, raw=True)) for on, engine in engines.items()}
    seconds = interleaved_median_seconds({str(on): (lambda e=e: e.score(workload.QUERY, docs)) for on, e in engines.items()}, reps, 1)
    return len(docs) / seconds["True"], len(docs) / seconds["False"], float(np.abs(scores[True] - scores[False]).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shapes", nargs="*", default=list(workload.SHAPES))
    parser.add_argument("--dtypes", nargs="*", default=["bf16", "fp32"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "rerankd-bench-models")
    args = parser.parse_args()
    print("| shape | dtype | docs | oneDNN layers pairs/s | plain nn.Linear pairs/s | ratio | max abs score difference |")
    print("|---|---|---|---|---|---|---|")
    for shape in args.shapes:
        for dtype in args.dtypes:
            on, off, diff = compare(shape, dtype, args.models_dir, args.reps)
            print(f"| {shape} | {dtype} | {DOCS[shape]} | {on:.2f} | {off:.2f} | {on / off:.2f}× | {diff:.2g} |", flush=True)


if __name__ == "__main__":
    main()
