"""The last encoder layer on first tokens only, against the full last layer, interleaved in one process.

Usage: python benchmarks/first_rows.py [--shapes minilm xlmr] [--dtype auto] [--reps 5]

A pair classifier reads each sequence's first token; the packed path runs its last layer for those
rows only (keys and values still over every token; ``rerankd.backends.packed.FirstRowsOnly``). One
engine, rerankd's default load path, scores the rerank-100 workload with the cut on and off in turns,
so machine drift hits both alike; the ratio is the figure to quote. Prints the CPU flags and the
largest score difference between the two ways (rounding).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload  # noqa: E402


def compare(shape: str, dtype: str, models_dir: Path, reps: int) -> tuple[int, float, float, float]:
    """(documents, pairs/s with the cut, pairs/s without, max |Δ raw score|) for one shape."""
    import numpy as np
    from transformers import AutoTokenizer

    from rerankd import Reranker
    from rerankd.measure import interleaved_median_seconds

    model_dir = workload.build_shape(shape, models_dir / shape)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    docs = workload.make_documents(tokenizer, workload.doc_token_lengths(workload.docs_for(shape)))
    engine = Reranker.from_pretrained(model_dir, dtype=dtype)
    module = engine.backend.module
    last = getattr(module, "last_layer", None)
    if last is None:
        raise SystemExit(f"{shape}: the default path has no first-rows cut here ({engine.describe()['backend']}, "
                         f"packed={engine.describe()['packed']})")

    def score(cut: bool) -> list[float]:
        module.last_layer = last if cut else None
        return engine.score(workload.QUERY, docs, raw=True)

    diff = float(np.abs(np.asarray(score(True)) - np.asarray(score(False))).max())
    seconds = interleaved_median_seconds({"cut": lambda: score(True), "full": lambda: score(False)}, reps, 1)
    module.last_layer = last
    return len(docs), len(docs) / seconds["cut"], len(docs) / seconds["full"], diff


def main() -> None:
    from rerankd.hardware import MATRIX_FLAGS, cpu_info

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="*", default=["minilm", "xlmr"], choices=["minilm", "xlmr"])
    parser.add_argument("--dtype", default="auto", help="auto (rerankd's default choice), fp32 or bf16")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "rerankd-bench-models")
    args = parser.parse_args()
    info = cpu_info()
    print(f"{info.model}; flags {' '.join(f for f in MATRIX_FLAGS if f in info.flags)}; dtype {args.dtype}")
    print("| shape | docs | last layer on first tokens pairs/s | full last layer pairs/s | ratio | max abs raw score difference |")
    print("|---|---|---|---|---|---|")
    for shape in args.shapes:
        docs, cut, full, diff = compare(shape, args.dtype, args.models_dir, args.reps)
        print(f"| {shape} | {docs} | {cut:.2f} | {full:.2f} | {cut / full:.2f}× | {diff:.2g} |", flush=True)


if __name__ == "__main__":
    main()
