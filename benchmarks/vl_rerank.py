"""Qwen3-VL-Reranker on CPU: rerankd against the reference loop, and the image-feature cache.

Usage:
    python benchmarks/vl_rerank.py --shape tiny            # seconds
    python benchmarks/vl_rerank.py --shape 2b --docs 4 --reps 1 --warmup 0   # minutes on 2 cores

1. One text query × ``--docs`` COCO image documents (../shared/data/coco-mini): rerankd
   (``Reranker.from_pretrained``, its default path: packed text model, batched vision tower, feature
   cache off so every run pays for the tower) against the reference (tests/vl_reference.py: one pair
   at a time, as ``Qwen3VLReranker.process`` ships), interleaved in the same run at the same dtype.
2. The same images for ``--queries`` queries with the feature cache on (cleared before each round):
   the mean cost of queries 2…N as a percentage of query 1; and with the cache off, for comparison.

The 2B shape is Qwen3-VL-2B-Instruct's published config (text hidden 2048, 28 layers, 16/8 heads,
head_dim 128, FFN 6144, tied embeddings; vision depth 24, hidden 1024, FFN 4096, 16 heads, out 2048,
deepstack [5, 11, 17]) with random weights (no weights are downloadable here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402

from rerankd import Document, Reranker  # noqa: E402
from rerankd.hardware import MATRIX_FLAGS, cpu_info  # noqa: E402
from rerankd.measure import interleaved_round_seconds  # noqa: E402

COCO = ROOT.parent / "shared" / "data" / "coco-mini"
QUERIES = [
    "a family sitting at a table with a birthday cake", "horses on a hill above a lake", "a laptop on a desk",
    "a city street with buses", "a dog playing in the park", "people skiing down a slope", "a plate of food",
    "a cat sleeping on a sofa", "a train at a station", "boats in a harbour",
]


def build(shape: str, models_dir: Path) -> Path:
    import tiny_models

    out = models_dir / f"qwen3-vl-{shape}"
    if not (out / "config.json").exists():
        print(f"building the random {shape} model in {out} ...", flush=True)
        tiny_models.qwen3_vl(out, shape=shape)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["tiny", "2b"], default="tiny")
    parser.add_argument("--docs", type=int, default=20)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where the CPU has it), fp32 or bf16: both sides")
    parser.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "rerankd-bench-models")
    parser.add_argument("--skip-reference", action="store_true", help="only the feature-cache part")
    args = parser.parse_args()
    if not COCO.is_dir():
        sys.exit(f"needs {COCO} (../shared/data/coco-mini)")
    from vl_reference import Qwen3VLRerankerReference, Side

    info = cpu_info()
    flags = " ".join(f for f in MATRIX_FLAGS if f in info.flags)
    model_dir = build(args.shape, args.models_dir)
    rows = [json.loads(line) for line in (COCO / "captions.jsonl").read_text().splitlines()]
    images = [str(COCO / r["image"]) for r in rows][: args.docs]
    reranker = Reranker.from_pretrained(model_dir, dtype=args.dtype, feature_cache_bytes=0)
    dtype = reranker.backend.dtype
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    print(f"{info.model}; flags {flags}; {torch.get_num_threads()} threads; torch {torch.__version__}; "
          f"shape {args.shape}; {dtype}; {len(images)} image documents", flush=True)
    print(f"rerankd: {reranker.describe()}", flush=True)
    documents = [Document.image(p) for p in images]
    query = QUERIES[0]

    results: dict[str, float] = {}
    if not args.skip_reference:
        reference = Qwen3VLRerankerReference(model_dir, dtype=torch_dtype)

        def reference_loop() -> None:
            for path in images:
                reference.score(Side(texts=[query]), Side(images=[path]))

        rounds = interleaved_round_seconds(
            {"rerankd": lambda: reranker.score(query, documents), "reference": reference_loop},
            reps=args.reps, warmup=args.warmup)
        times = {name: statistics.median(t) for name, t in rounds.items()}
        print("round seconds: " + "; ".join(f"{name} {', '.join(f'{t:.2f}' for t in ts)}" for name, ts in rounds.items()),
              flush=True)
        n = len(images)
        results = {"rerankd": n / times["rerankd"], "reference": n / times["reference"]}
        print(f"\n| shape | dtype | docs | reference pairs/s | rerankd pairs/s | speed-up |\n|---|---|---|---|---|---|\n"
              f"| {args.shape} | {dtype} | {n} | {results['reference']:.3f} | {results['rerankd']:.3f} | "
              f"{results['rerankd'] / results['reference']:.2f}× |", flush=True)
        del reference

    # -- the feature cache: the same images for several queries ----------------------------------------
    cached = Reranker.from_pretrained(model_dir, dtype=args.dtype)
    queries = QUERIES[: args.queries]

    def per_query(r: Reranker) -> list[float]:
        out = []
        for q in queries:
            start = time.perf_counter()
            r.score(q, documents)
            out.append(time.perf_counter() - start)
        return out

    for _ in range(args.warmup):
        per_query(reranker)
    on, off = [], []
    for _ in range(max(1, args.reps)):
        cached.backend.feature_cache.clear()
        on.append(per_query(cached))
        off.append(per_query(reranker))
    first_on = statistics.median(t[0] for t in on)
    rest_on = statistics.median(statistics.mean(t[1:]) for t in on)
    first_off = statistics.median(t[0] for t in off)
    rest_off = statistics.median(statistics.mean(t[1:]) for t in off)
    print(f"\n| feature cache | query 1 s | queries 2–{len(queries)} mean s | as % of query 1 |\n|---|---|---|---|\n"
          f"| on | {first_on:.3f} | {rest_on:.3f} | {100 * rest_on / first_on:.0f}% |\n"
          f"| off | {first_off:.3f} | {rest_off:.3f} | {100 * rest_off / first_off:.0f}% |")
    print(f"\nfeature cache stats: {cached.backend.stats()}")


if __name__ == "__main__":
    main()
