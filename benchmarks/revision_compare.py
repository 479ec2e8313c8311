"""rerank-100 pairs/s of this checkout against another git revision, interleaved in one run.

Each side runs in its own worker process (``PYTHONPATH`` pointing at that revision's ``src``), loads
the same random-weight model through ``Reranker.from_pretrained(dir)`` (the default path), warms up,
then times one ``score(query, documents)`` call whenever the parent asks. The parent alternates the
sides for ``--reps`` rounds (the order flips every round), so drift on a shared machine hits both
alike, and reports medians and the ratio. Scores of the two sides are compared too.

Usage: python benchmarks/revision_compare.py --base HEAD~1 [minilm] [--reps 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

WORKER = r"""
import json, sys, time
from rerankd import Reranker
spec = json.loads(sys.stdin.readline())
reranker = Reranker.from_pretrained(spec["model_dir"])
query, docs = spec["query"], spec["docs"]
scores = reranker.score(query, docs, raw=True)
reranker.score(query, docs)
print(json.dumps({"ready": True, "scores": scores, "describe": {k: str(v) for k, v in reranker.describe().items()}}), flush=True)
for line in sys.stdin:
    start = time.perf_counter()
    reranker.score(query, docs)
    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
"""


def start_worker(src: Path, spec: dict) -> tuple[subprocess.Popen, dict]:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps(spec) + "\n")
    proc.stdin.flush()
    return proc, json.loads(proc.stdout.readline())


def time_once(proc: subprocess.Popen) -> float:
    assert proc.stdin and proc.stdout
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return float(json.loads(proc.stdout.readline())["seconds"])


def main() -> None:
    import numpy as np
    import workload

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("shapes", nargs="*", default=["minilm"])
    parser.add_argument("--base", required=True, help="git revision to compare this checkout against")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "rerankd-bench-models")
    args = parser.parse_args()

    base_dir = Path(tempfile.mkdtemp(prefix="rerankd-base-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_dir), args.base], check=True,
                   capture_output=True)
    from rerankd.hardware import MATRIX_FLAGS, cpu_flags

    flags = sorted(set(MATRIX_FLAGS) & cpu_flags())
    print(f"base {args.base} vs this checkout; CPU flags: {' '.join(flags)}; {os.cpu_count()} CPUs; {args.reps} interleaved rounds\n")
    rows = []
    try:
        for shape in args.shapes:
            model_dir = workload.build_shape(shape, args.models_dir / shape)
            from transformers import AutoTokenizer

            docs = workload.make_documents(AutoTokenizer.from_pretrained(str(model_dir)),
                                           workload.doc_token_lengths(workload.docs_for(shape)))
            spec = {"model_dir": str(model_dir), "query": workload.QUERY, "docs": docs}
            sides = {}
            for name, src in (("base", base_dir / "src"), ("this", ROOT / "src")):
                sides[name] = start_worker(src, spec)
            print(f"{shape}: this checkout {sides['this'][1]['describe']}", flush=True)
            times: dict[str, list[float]] = {"base": [], "this": []}
            for rep in range(args.reps):
                order = ("base", "this") if rep % 2 == 0 else ("this", "base")
                for name in order:
                    times[name].append(time_once(sides[name][0]))
            delta = float(np.max(np.abs(np.array(sides["base"][1]["scores"]) - np.array(sides["this"][1]["scores"]))))
            for proc, _ in sides.values():
                proc.kill()
            base_ps = len(docs) / statistics.median(times["base"])
            this_ps = len(docs) / statistics.median(times["this"])
            spread = {k: (max(v) - min(v)) / statistics.median(v) for k, v in times.items()}
            rows.append((shape, len(docs), base_ps, this_ps, this_ps / base_ps, delta, spread))
            print(f"{shape}: base {base_ps:.2f} pairs/s, this {this_ps:.2f} pairs/s ({this_ps / base_ps:.3f}x)", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_dir)], capture_output=True)

    print(f"\n| shape | docs | {args.base} pairs/s | this checkout pairs/s | ratio | max abs score difference | spread (max-min)/median base / this |")
    print("|---|---|---|---|---|---|---|")
    for shape, n, base_ps, this_ps, ratio, delta, spread in rows:
        print(f"| {shape} | {n} | {base_ps:.2f} | {this_ps:.2f} | {ratio:.3f}× | {delta:.2g} | {spread['base']:.0%} / {spread['this']:.0%} |")


if __name__ == "__main__":
    main()
