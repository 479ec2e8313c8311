"""The score head in fp32 vs left in bf16, on this CPU: distinct scores and pairs/s, interleaved in one run.

Usage: python benchmarks/head_precision.py [--reps 7]
The same MiniLM-L6-shaped bf16 model is loaded twice: as rerankd runs it (classifier and pooler in
fp32, fed the upcast hidden state: ``torch_modules.keep_head_fp32``) and with the head left in bf16.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import workload  # noqa: E402

import rerankd.backends.torch_modules as torch_modules  # noqa: E402
from rerankd import Reranker  # noqa: E402
from rerankd.hardware import cpu_info  # noqa: E402
from rerankd.measure import rerank_workload  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    model_dir = workload.build_shape("minilm", Path(tempfile.gettempdir()) / "rerankd-bench-models" / "minilm")
    fp32_head = Reranker.from_pretrained(str(model_dir), device="cpu", dtype="bf16")
    keep = torch_modules.keep_head_fp32
    torch_modules.keep_head_fp32 = lambda model: []  # the head as transformers leaves it: bf16
    try:
        bf16_head = Reranker.from_pretrained(str(model_dir), device="cpu", dtype="bf16")
    finally:
        torch_modules.keep_head_fp32 = keep
    query, docs = rerank_workload(100)
    times = workload.interleaved_times({"fp32 head": lambda: fp32_head.score(query, docs),
                                        "bf16 head": lambda: bf16_head.score(query, docs)}, reps=args.reps)
    reference = Reranker.from_pretrained(str(model_dir), device="cpu", dtype="fp32").score(query, docs, raw=True)
    print(f"CPU: {cpu_info().model}, {cpu_info().usable_cores} cores; 100 rerank-100 documents\n")
    print("| head | distinct raw scores | max \\|Δ\\| vs fp32 model | pairs/s |\n|---|---|---|---|")
    for name, engine in (("fp32 head", fp32_head), ("bf16 head", bf16_head)):
        raw = np.array(engine.score(query, docs, raw=True))
        print(f"| {name} | {len(set(raw.tolist()))} / {len(docs)} | {np.max(np.abs(raw - reference)):.3g} | "
              f"{len(docs) / times[name]:.2f} |")


if __name__ == "__main__":
    main()
