"""bf16 encoders with an fp32 residual stream against the plain bf16 stream, interleaved in one process.

Usage: python benchmarks/residual_fp32.py [--shapes minilm xlmr] [--docs 100] [--reps 5]

For each shape (random weights, rerank-100 lengths), in one process: rerankd's default load path
(bf16 on a CPU with native bf16; post-LN norms fp32, ``backends/residual_fp32.py``), the same with
the norms on torch's ops instead of rerankd's norm kernel (``torch_norms_only``), and the plain bf16
stream (``TorchBackend(fp32_residual=False)``). Each row: pairs/s (median of ``--reps`` interleaved
rounds), and Spearman and max |Δ| of the raw scores against rerankd torch fp32 on the same documents.

Prints the CPU and its flags; needs a CPU oneDNN runs bf16 on.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload  # noqa: E402


def compare(shape: str, models_dir: Path, n_docs: int, reps: int) -> list[str]:
    import numpy as np
    from scipy.stats import spearmanr
    from transformers import AutoTokenizer

    from rerankd import Reranker
    from rerankd.backends.residual_fp32 import torch_norms_only
    from rerankd.backends.torch_backend import TorchBackend
    from rerankd.batching import BatchLimits
    from rerankd.device import default_batch_tokens
    from rerankd.measure import interleaved_median_seconds

    model_dir = workload.build_shape(shape, models_dir / shape)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    docs = workload.make_documents(tokenizer, workload.doc_token_lengths(n_docs))
    reference = np.asarray(Reranker.from_pretrained(model_dir, dtype="fp32").score(workload.QUERY, docs, raw=True))
    default = Reranker.from_pretrained(model_dir)
    plain = Reranker(default.family, TorchBackend(default.family, device="cpu", dtype=default.backend.dtype, fp32_residual=False),
                     batch_limits=BatchLimits(default_batch_tokens("cpu")))

    def fp32_stream() -> list[float]:
        return default.score(workload.QUERY, docs, raw=True)

    def fp32_stream_torch_norms() -> list[float]:
        with torch_norms_only():
            return default.score(workload.QUERY, docs, raw=True)

    def bf16_stream() -> list[float]:
        return plain.score(workload.QUERY, docs, raw=True)

    runs = {"fp32 residual (default)": fp32_stream, "fp32 residual, torch norms": fp32_stream_torch_norms,
            "bf16 residual": bf16_stream}
    agreement = {}
    for name, run in runs.items():
        scores = np.asarray(run())
        agreement[name] = (float(spearmanr(reference, scores).statistic), float(np.abs(scores - reference).max()))
    seconds = interleaved_median_seconds(runs, reps, 1)
    described = default.describe()
    lines = []
    for name in runs:
        rho, delta = agreement[name]
        lines.append(f"| {shape}, {len(docs)} docs | {name} | {len(docs) / seconds[name]:.2f} | "
                     f"{seconds['bf16 residual'] / seconds[name]:.2f}× | {rho:.4f} | {delta:.5f} |")
    lines.append(f"| | (default: dtype {described['dtype']}, fp32 residual norms "
                 f"{described.get('fp32_residual_norms', 0)}, {described.get('fp32_residual_norm_kernel', 'no norm kernel')}; "
                 f"fp32 raw scores std {reference.std():.4f}) | | | | |")
    return lines


def main() -> None:
    from peers import machine_lines

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="*", default=["minilm", "xlmr"], choices=["minilm", "xlmr"])
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "rerankd-bench-models")
    args = parser.parse_args()
    print("\n".join(machine_lines()))
    print("\n| shape | residual stream | pairs/s | × bf16 residual | Spearman vs fp32 | max \\|Δ raw\\| vs fp32 |")
    print("|---|---|---|---|---|---|")
    for shape in args.shapes:
        print("\n".join(compare(shape, args.models_dir, args.docs, args.reps)), flush=True)


if __name__ == "__main__":
    main()
