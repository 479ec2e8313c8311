"""What running on Ray costs on one machine: Ray Data batch scoring and Ray Serve against plain rerankd.

Offline: ``rerankd eval run`` on SciFact train queries × BM25 top-20 with the MiniLM-L6 cross-encoder
shape (random weights, ms-marco tokenizer), single-process and with ``--engine ray`` at concurrency 1
(one actor of every core) and 2 (two actors, a core each): equal cores in every row. Each run is its
own process with a fresh score cache (the BM25 index is cached); pairs/s is the scoring loop's,
actor start-up and model loading on Ray included. The single-process run is measured before and after
the Ray runs (the machine is shared; their mean is the baseline).

Online: 16 closed-loop clients sending 1 query × 20 documents (serve_load.py's requests) to
``rerankd serve`` and to ``rerankd serve --ray`` with 1 replica of every core and with 2 replicas of
a core each.

Target: Ray's overhead ≤ 10% at equal cores.

Usage: python benchmarks/ray_overhead.py [--queries 100] [--requests 160] [--skip-serve]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serve_load  # noqa: E402
import workload  # noqa: E402

SCIFACT = workload.SHARED / "data" / "scifact"
TARGET = 0.10
CLIENTS = 16


def cpu_flags() -> str:
    from rerankd.hardware import cpu_info

    info = cpu_info()
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")
    return f"{info.model}, {info.usable_cores} usable cores, flags {' '.join(f for f in wanted if f in info.flags)}"


def eval_run(model: Path, queries: int, out: Path, cache: Path, *engine: str) -> tuple[float, bytes]:
    """(pairs/s of the rerank, run file bytes) of one ``rerankd eval run`` in its own process."""
    command = [sys.executable, "-m", "rerankd.cli", "eval", "run", "--data", str(SCIFACT), "--split", "train",
               "--max-queries", str(queries), "--k", "20", "-m", str(model), "--cache-dir", str(cache),
               "--out", str(out), "--no-charts", "--no-progress", *engine]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    (run,) = [p for p in (out / "runs").glob("*.trec") if not p.name.startswith("bm25")]
    return float(metrics["rerankers"][0]["pairs_per_s"]), run.read_bytes()


def serve_rate(model: Path, requests: int, *extra: str) -> tuple[float, int]:
    """(pairs/s, errors) of 16 clients against one server started with ``extra`` options."""
    from transformers import AutoTokenizer

    docs = workload.make_documents(AutoTokenizer.from_pretrained(str(model)), workload.doc_token_lengths(100))
    sets = serve_load.request_sets(docs)
    port = serve_load.free_port()
    proc = serve_load.start_server(model, port, 2.0, extra)
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(serve_load.server_slice(url, sets, CLIENTS, 1))  # warm-up, not counted
        pairs, wall, _, errors = asyncio.run(serve_load.server_slice(url, sets, CLIENTS, max(1, requests // CLIENTS)))
    finally:
        proc.terminate()
        proc.wait(120)
    return pairs / wall, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=100, help="SciFact train queries (×20 BM25 candidates)")
    parser.add_argument("--requests", type=int, default=160, help="requests per server measurement")
    parser.add_argument("--skip-serve", action="store_true", help="only the offline rows")
    parser.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "rerankd-bench-models")
    args = parser.parse_args()
    if not (SCIFACT / "qrels" / "train.tsv").exists():
        raise SystemExit(f"needs {SCIFACT} (../shared/data/scifact)")
    model = workload.build_shape("minilm", args.models_dir / "minilm")
    cores = os.cpu_count() or 1
    print(f"{cpu_flags()}; MiniLM-L6-H384 shape, SciFact train × BM25 top-20, {args.queries} queries", flush=True)

    rows: list[tuple[str, str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        index = work / "index"
        eval_run(model, 2, work / "warm", index)  # builds the BM25 index once, outside the timings
        before, reference = eval_run(model, args.queries, work / "local-1", index)
        ray_rows = []
        for concurrency in (1, 2):
            rate, run = eval_run(model, args.queries, work / f"ray-{concurrency}", index, "--engine", "ray",
                                 "--concurrency", str(concurrency), "--actor-cpus", str(max(1, cores // concurrency)))
            ray_rows.append((concurrency, rate, run == reference))
        after, _ = eval_run(model, args.queries, work / "local-2", index)
        baseline = (before + after) / 2
        pairs = args.queries * 20
        rows.append(("offline", f"single process ({cores} threads)", baseline, f"before {before:.1f}, after {after:.1f}"))
        for concurrency, rate, same in ray_rows:
            rows.append(("offline", f"Ray Data, concurrency {concurrency} × {max(1, cores // concurrency)} CPU", rate,
                         f"{100 * (1 - rate / baseline):+.0f}% overhead; run file {'identical' if same else 'differs'}"))
        print(f"offline rows done ({pairs} pairs each)", flush=True)

    if not args.skip_serve:
        plain, plain_errors = serve_rate(model, args.requests)
        rows.append(("serve 16 clients", "rerankd serve", plain, f"{plain_errors} errors"))
        for replicas in (1, 2):
            rate, errors = serve_rate(model, args.requests, "--ray", "--replicas", str(replicas), "--replica-cpus",
                                      str(max(1, cores // replicas)))
            rows.append(("serve 16 clients", f"serve --ray, {replicas} replica(s) × {max(1, cores // replicas)} CPU",
                         rate, f"{100 * (1 - rate / plain):+.0f}% overhead, {errors} errors"))

    print("\n| path | engine | pairs/s | note |\n|---|---|---|---|")
    for path, engine, rate, note in rows:
        print(f"| {path} | {engine} | {rate:.1f} | {note} |")
    print(f"\ntarget: Ray's overhead ≤ {TARGET:.0%} at equal cores (positive % = slower than plain rerankd)")


if __name__ == "__main__":
    main()
