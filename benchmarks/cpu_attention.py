"""rerankd's AMX attention kernel against torch's SDPA, interleaved in one process.

Usage: python benchmarks/cpu_attention.py [--reps 5] [--shapes minilm xlmr] [--no-models]

1. Attention alone, bf16, 2 cores' worth of threads, random inputs shaped as each model's packed
   batches: MiniLM-L6 (12 heads × 32) and XLM-R large (16 × 64) over the rerank-100 lengths; the
   Qwen3-VL-2B vision tower (16 × 64, six images of 1040 patches); the Qwen3-VL-2B text model
   (16 query / 8 key heads × 128, causal, six documents of ~300 tokens after a shared 90-token prompt).
   torch's side is what rerankd ran before the kernel: SDPA per sequence (with the prefix, two
   flash calls merged by log-sum-exp).
2. Whole models: rerankd's default load path scoring the rerank-100 workload with the kernel and
   with torch's SDPA (``torch_sdpa_only``), in turns, and the largest score difference.

Prints the CPU and its flags; the kernel needs AMX-BF16 (elsewhere it says why it does not run).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload  # noqa: E402


def _packed(lengths: list[int], heads: int, kv_heads: int, head_dim: int, seed: int = 0):  # type: ignore[no-untyped-def]
    import torch

    generator = torch.Generator().manual_seed(seed)
    bounds = [0]
    for n in lengths:
        bounds.append(bounds[-1] + n)
    q = torch.randn(1, bounds[-1], heads, head_dim, generator=generator).to(torch.bfloat16).transpose(1, 2)
    kv = torch.randn(1, bounds[-1], 2, kv_heads, head_dim, generator=generator).to(torch.bfloat16)
    return q, kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2), bounds


def attention_alone(reps: int) -> list[str]:
    import torch

    from rerankd.backends import cpu_attention
    from rerankd.backends.packed import _attend_with_prefix, sdpa_per_sequence
    from rerankd.measure import interleaved_median_seconds

    text = [n + 20 for n in workload.doc_token_lengths(100)]  # query + document tokens
    cases = {
        "MiniLM-L6 layer, rerank-100 (12 × 32)": (text, 12, 12, 32, False, 0),
        "XLM-R large layer, 20 documents (16 × 64)": (text[:20], 16, 16, 64, False, 0),
        "Qwen3-VL-2B vision layer, 6 images (16 × 64)": ([1040] * 6, 16, 16, 64, False, 0),
        "Qwen3-VL-2B text layer, 6 image documents (16/8 × 128, causal, prefix 90)": ([300] * 6, 16, 8, 128, True, 90),
    }
    lines = ["| attention call | tokens | rerankd kernel ms | torch SDPA ms | speed-up | max abs difference |",
             "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for name, (lengths, heads, kv_heads, head_dim, causal, prefix_len) in cases.items():
        q, k, v, bounds = _packed(lengths, heads, kv_heads, head_dim)
        prefix = None
        if prefix_len:
            _, pk, pv, _ = _packed([prefix_len], heads, kv_heads, head_dim, seed=1)
            prefix = (pk, pv)

        def kernel():  # type: ignore[no-untyped-def]
            return cpu_attention.attention(q, k, v, bounds, None, causal=causal, prefix=prefix)

        def plain():  # type: ignore[no-untyped-def]
            groups = heads // kv_heads
            keys, values = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
            with cpu_attention.torch_sdpa_only():
                if prefix is None:
                    return sdpa_per_sequence(q, keys, values, bounds, causal, None)
                shared = tuple(t.repeat_interleave(groups, 1) for t in prefix)
                return _attend_with_prefix(q, keys, values, bounds, shared, None)

        with torch.inference_mode():
            diff = float((kernel().float() - plain().float()).abs().max())
            seconds = interleaved_median_seconds({"kernel": kernel, "torch": plain}, reps, 1)
        lines.append(f"| {name} | {bounds[-1]} | {seconds['kernel'] * 1e3:.1f} | {seconds['torch'] * 1e3:.1f} | "
                     f"{seconds['torch'] / seconds['kernel']:.2f}× | {diff:.3g} |")
        print(lines[-1], flush=True)
    return lines


def whole_model(shape: str, models_dir: Path, reps: int) -> str:
    import numpy as np
    from transformers import AutoTokenizer

    from rerankd import Reranker
    from rerankd.backends import cpu_attention
    from rerankd.measure import interleaved_median_seconds

    model_dir = workload.build_shape(shape, models_dir / shape)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    docs = workload.make_documents(tokenizer, workload.doc_token_lengths(workload.docs_for(shape)))
    engine = Reranker.from_pretrained(model_dir)

    def with_kernel() -> list[float]:
        return engine.score(workload.QUERY, docs, raw=True)

    def with_torch() -> list[float]:
        with cpu_attention.torch_sdpa_only():
            return engine.score(workload.QUERY, docs, raw=True)

    diff = float(np.abs(np.asarray(with_kernel()) - np.asarray(with_torch())).max())
    seconds = interleaved_median_seconds({"kernel": with_kernel, "torch": with_torch}, reps, 1)
    n = len(docs)
    return (f"| {shape} ({engine.describe()['dtype']}, attention {engine.describe()['attention']}) | {n} | "
            f"{n / seconds['kernel']:.2f} | {n / seconds['torch']:.2f} | {seconds['torch'] / seconds['kernel']:.2f}× | {diff:.2g} |")


def main() -> None:
    from peers import machine_lines

    from rerankd.backends import cpu_attention

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="*", default=["minilm", "xlmr"], choices=["minilm", "xlmr"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-models", action="store_true", help="only the attention calls")
    parser.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "rerankd-bench-models")
    args = parser.parse_args()
    print("\n".join(machine_lines()))
    print(f"kernel: {cpu_attention.status().reason}")
    if cpu_attention.status().function is None:
        raise SystemExit("nothing to compare on this machine")
    print()
    attention_alone(args.reps)
    if args.no_models:
        return
    print("\n| model | docs | pairs/s with the kernel | pairs/s with torch SDPA | speed-up | max abs raw score difference |")
    print("|---|---|---|---|---|---|")
    for shape in args.shapes:
        print(whole_model(shape, args.models_dir, args.reps), flush=True)


if __name__ == "__main__":
    main()
