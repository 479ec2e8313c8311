"""CPU backends × precision × shape on the rerank-100 workload, with the baselines in the same run.

Usage: python benchmarks/cpu_backends.py [--shapes minilm xlmr qwen] [--reps 2] [--profile]

Each row runs in its own subprocess so its peak RSS is its own. Rows: rerankd torch bf16 / fp32
(and bf16 with plain nn.Linear layers, to show what the oneDNN layers bring), torch-int8, ONNX
Runtime fp32 / int8 / int8 with every product quantized / int4 (exported once per shape),
sentence-transformers CrossEncoder.predict with default settings (encoder shapes), and PERF.md's
naive baseline (HF fp32, batch 32 in input order). Prints pairs/s, % of the bf16 GEMM ceiling (2048³
via torch, measured at the start of the run), peak RSS, model size, the ratios the targets are
about, and the bounds the hardware puts on pairs/s (bf16 GEMM ceiling, attention alone, int8 GEMM peak).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workload  # noqa: E402

ROWS = {  # name → (backend, dtype) for rerankd rows; None for the baselines
    "rerankd torch bf16": ("torch", "bf16"),
    # The same without oneDNN-reordered weights and fused activations (backends/onednn_linear.py).
    "rerankd torch bf16, plain nn.Linear": ("torch-plain", "bf16"),
    "rerankd torch fp32": ("torch", "fp32"),
    "rerankd torch-int8": ("torch-int8", "int8"),
    "rerankd onnx fp32": ("onnx", "fp32"),
    "rerankd onnx int8": ("onnx", "int8"),
    # rerankd's int8 keeps the FFN down-projections fp32 for ranking quality; this row shows what that costs.
    "rerankd onnx int8, every product": ("onnx", "int8-all"),
    # 4-bit weights in blocks of 32: the smallest model, for memory-bound hosts.
    "rerankd onnx int4": ("onnx", "int4"),
    "sentence-transformers CrossEncoder (default)": None,
    "naive HF fp32 bs32": None,
}


def run_row(shape: str, row: str, model_dir: Path, onnx_dir: Path, reps: int) -> dict:
    """Child process: load one way of scoring, time it on the workload, report pairs/s and peak RSS."""
    from transformers import AutoTokenizer

    from rerankd.measure import pairs_per_second, peak_rss_bytes

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    docs = workload.make_documents(tok, workload.doc_token_lengths(workload.docs_for(shape)))
    query = workload.QUERY
    spec = ROWS[row]
    if spec is not None:
        from rerankd import Reranker

        backend, dtype = spec
        if backend == "onnx":
            reranker = Reranker.from_pretrained(str(onnx_dir / dtype), backend="onnx")
        elif backend == "torch-plain":
            reranker = workload.torch_engine(model_dir, dtype, onednn=False)
        else:
            reranker = Reranker.from_pretrained(str(model_dir), backend=backend, dtype=None if dtype == "int8" else dtype)
        score = lambda: reranker.score(query, docs)  # noqa: E731
        tokens = [len(s) for s in reranker.pipeline.prepare(query, docs).sequences]
    elif row.startswith("sentence-transformers"):
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(str(model_dir), device="cpu")
        score = lambda: model.predict([(query, d) for d in docs])  # noqa: E731
        tokens = None
    else:
        naive = workload.naive_scorer(model_dir, shape)
        score = lambda: naive(query, docs)  # noqa: E731
        tokens = None
    speed = pairs_per_second(score, len(docs), reps=reps, warmup=1)
    return {"pairs_per_s": speed, "peak_rss": peak_rss_bytes(), "docs": len(docs), "tokens": tokens}


def model_size(row: str, model_dir: Path, onnx_dir: Path) -> int:
    from rerankd.measure import weights_size_bytes

    spec = ROWS[row]
    if spec and spec[0] == "onnx":
        return weights_size_bytes(onnx_dir / spec[1])
    weights = weights_size_bytes(model_dir)
    return weights // 2 if spec and spec[1] == "bf16" else weights  # bf16 holds half the fp32 bytes


def profile(shape: str, model_dir: Path, onnx_dir: Path) -> None:
    """Where the time goes in one batch: torch.profiler for torch bf16, ORT's profiler for ONNX int8."""
    import torch
    from transformers import AutoTokenizer

    from rerankd import Reranker

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    docs = workload.make_documents(tok, workload.doc_token_lengths(workload.docs_for(shape)))[:16]
    reranker = Reranker.from_pretrained(str(model_dir), dtype="bf16")
    reranker.score(workload.QUERY, docs)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        reranker.score(workload.QUERY, docs)
    print(f"\n### torch bf16 profile, {shape}, 16 docs\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    import onnxruntime as ort

    from rerankd.backends.onnx_backend import OnnxBackend

    engine = Reranker.from_pretrained(str(onnx_dir / "int8"), backend="onnx")
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = engine.backend.threads
    engine.backend.session = ort.InferenceSession(str(engine.backend.model_file), options, providers=["CPUExecutionProvider"])
    engine.score(workload.QUERY, docs)
    trace = json.loads(Path(engine.backend.session.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for event in trace:
        if event.get("cat") == "Node":
            op = event.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + event.get("dur", 0) / 1e3
    total = sum(by_op.values())
    print(f"\n### ONNX Runtime int8 profile, {shape}, 16 docs (ms by op type)\n")
    for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {op:28s} {ms:9.1f} ms  {100 * ms / total:5.1f}%")
    _ = OnnxBackend


def print_bounds(shape: str, model_dir: Path, tokens: list[int], ceilings: dict[str, float], st: dict | None) -> None:
    """Print the most pairs/s the hardware allows for this workload, under each assumption that bounds it.

    Each bound treats everything it does not name as free, so each is an upper limit for any path that
    runs at the rates it names: the useful work at the bf16 GEMM rate (every bf16 path), the linear
    layers alone at that rate, exact attention alone as torch's kernel runs it (every path on that
    kernel), and the linear layers at the int8 GEMM peak (as if a W8A8 path cost nothing beyond its
    GEMMs) plus that attention.
    """
    parts = workload.flops_by_part(model_dir, tokens)
    attention = workload.attention_seconds(model_dir, tokens)
    seconds = {
        "all useful work at the bf16 GEMM ceiling": sum(parts.values()) / ceilings["bf16"],
        "linear layers alone at the bf16 GEMM ceiling": parts["linear"] / ceilings["bf16"],
        "exact attention alone (bf16 SDPA per sequence, as measured)": attention,
        "linear layers at the int8 GEMM peak + attention as measured": parts["linear"] / ceilings["int8"] + attention,
    }
    for what, time_taken in seconds.items():
        bound = len(tokens) / time_taken
        versus = f" = {bound / st['pairs_per_s']:.1f}× sentence-transformers" if st else ""
        print(f"{shape}: at most {bound:.3g} pairs/s{versus} with {what} and every other op free", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shapes", nargs="*", default=list(workload.SHAPES))
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--rows", nargs="*", default=list(ROWS))
    parser.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "rerankd-bench-models")
    parser.add_argument("--profile", action="store_true", help="profile torch bf16 and ORT int8 on the first shape")
    parser.add_argument("--child", nargs=2, metavar=("SHAPE", "ROW"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        shape, row = args.child
        model_dir = workload.build_shape(shape, args.models_dir / shape)
        print("RESULT " + json.dumps(run_row(shape, row, model_dir, args.models_dir / f"{shape}-onnx", args.reps)))
        return

    import torch

    from rerankd.export import export_model

    ceiling, int8_ceiling = workload.gemm_ceiling("bf16"), workload.gemm_ceiling("int8")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 GEMM ceiling {ceiling / 1e9:.0f} GFLOP/s, "
          f"int8 GEMM peak {int8_ceiling / 1e9:.0f} GOP/s", flush=True)
    table = []
    for shape in args.shapes:
        model_dir = workload.build_shape(shape, args.models_dir / shape)
        onnx_dir = args.models_dir / f"{shape}-onnx"
        for precision in ("fp32", "int8", "int8-all", "int4"):
            if not (onnx_dir / precision / "model.onnx").exists() and any(ROWS[r] == ("onnx", precision) for r in args.rows):
                start = time.perf_counter()
                export_model(str(model_dir), onnx_dir / precision, precision=precision.split("-")[0], overwrite=True,
                             keep_ffn_output=precision != "int8-all")
                print(f"{shape}: exported onnx {precision} in {time.perf_counter() - start:.0f} s", flush=True)
        results = {}
        for row in args.rows:
            if row.startswith("sentence-transformers") and shape == "qwen":
                continue
            proc = subprocess.run([sys.executable, __file__, "--child", shape, row, "--reps", str(args.reps),
                                   "--models-dir", str(args.models_dir)], capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(f"{shape} {row}: failed\n{proc.stderr[-2000:]}", flush=True)
                continue
            result = json.loads(line[7:])
            results[row] = result
            tokens = result["tokens"] or next((r["tokens"] for r in results.values() if r["tokens"]), None)
            frac = workload.useful_flops(model_dir, tokens) / (result["docs"] / result["pairs_per_s"]) / ceiling if tokens else float("nan")
            table.append((shape, row, result["docs"], result["pairs_per_s"], frac, result["peak_rss"], model_size(row, model_dir, onnx_dir)))
            print(f"{shape} {row}: {result['pairs_per_s']:.2f} pairs/s, {100 * frac:.0f}% of ceiling, "
                  f"peak RSS {result['peak_rss'] / 2**20:.0f} MiB", flush=True)
        best = max((r for r in results if ROWS[r]), key=lambda r: results[r]["pairs_per_s"], default=None)
        st = results.get("sentence-transformers CrossEncoder (default)")
        ratios = []
        if best and st:
            ratios.append(f"best ({best}) / sentence-transformers = {results[best]['pairs_per_s'] / st['pairs_per_s']:.1f}×")
        if "rerankd onnx int8" in results and "rerankd onnx fp32" in results:
            ratios.append(f"ORT int8 / ORT fp32 = {results['rerankd onnx int8']['pairs_per_s'] / results['rerankd onnx fp32']['pairs_per_s']:.2f}×")
        if "naive HF fp32 bs32" in results and best:
            ratios.append(f"best / naive = {results[best]['pairs_per_s'] / results['naive HF fp32 bs32']['pairs_per_s']:.1f}×")
        print(f"{shape}: " + "; ".join(ratios), flush=True)
        tokens = next((r["tokens"] for r in results.values() if r["tokens"]), None)
        if tokens:
            print_bounds(shape, model_dir, tokens, {"bf16": ceiling, "int8": int8_ceiling}, st)

    print(f"\nbf16 GEMM ceiling {ceiling / 1e9:.0f} GFLOP/s (2048³ via torch, this run)\n")
    print("| shape | path | docs | pairs/s | % of bf16 GEMM ceiling | peak RSS MiB | model size MiB |")
    print("|---|---|---|---|---|---|---|")
    for shape, row, docs, speed, frac, rss, size in table:
        print(f"| {shape} | {row} | {docs} | {speed:.2f} | {100 * frac:.0f}% | {rss / 2**20:.0f} | {size / 2**20:.0f} |")
    if args.profile and args.shapes:
        profile(args.shapes[0], args.models_dir / args.shapes[0], args.models_dir / f"{args.shapes[0]}-onnx")


if __name__ == "__main__":
    main()
