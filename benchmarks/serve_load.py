"""`rerankd serve` under bounded load on loopback, against `Reranker.score` offline on the same pairs.

Each client sends 1 query × 20 documents of the rerank-100 workload (real SciFact text cut to the
workload's lognormal token lengths), waits for the answer and sends the next. The server runs as a
separate `rerankd serve` process with the MiniLM-L6 cross-encoder shape (random weights, ms-marco
tokenizer); offline is `Reranker.score` in this process on the very same requests.

The machine is shared, so its speed drifts from second to second: each concurrency level is measured
as offline (half its requests) → server (all of them) → offline (the other half), and the level's
ratio compares the server with the offline run around it. Offline runs both on the main thread (as a
script would call it) and on a worker thread (as the server's inference worker does: on some
machines torch is faster there); the target is judged against the faster of the two.

Target: at 16 and more concurrent clients the server delivers ≥ 85% of offline pairs/s.

Usage: python benchmarks/serve_load.py [--levels 1,8,16,32] [--requests 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import workload  # noqa: E402

DOCS_PER_REQUEST = 20
TARGET = 0.85


def request_sets(docs: list[str]) -> list[list[str]]:
    """The rerank-100 documents as five 20-document requests."""
    return [docs[i : i + DOCS_PER_REQUEST] for i in range(0, len(docs), DOCS_PER_REQUEST)]


def offline_slice(reranker: Any, sets: list[list[str]], requests: range) -> tuple[int, float]:
    """(pairs, seconds) of ``Reranker.score`` over the given request numbers."""
    pairs, start = 0, time.perf_counter()
    for k in requests:
        docs = sets[k % len(sets)]
        reranker.score(workload.QUERY, docs)
        pairs += len(docs)
    return pairs, time.perf_counter() - start


async def server_slice(url: str, sets: list[list[str]], clients: int, per_client: int) -> tuple[int, float, list[float], int]:
    """Closed-loop clients, ``per_client`` requests each: (pairs, seconds, latencies in s, errors)."""
    latencies: list[float] = []
    errors = 0
    pairs = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        async def worker(c: int) -> None:
            nonlocal errors, pairs
            for i in range(per_client):
                docs = sets[(c + i * clients) % len(sets)]
                start = time.perf_counter()
                r = await client.post("/v1/rerank", json={"model": "minilm", "query": workload.QUERY, "documents": docs})
                if r.status_code != 200:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - start)
                pairs += len(docs)

        start = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in range(clients)))
        wall = time.perf_counter() - start
    return pairs, wall, latencies, errors


def merge_stats(url: str) -> tuple[float, float, float, float]:
    """(mean requests per batch, mean sequences per batch, requests-per-batch sum, batch count) so far."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in family.samples:
            if s.name in {"rerankd_batch_requests_sum", "rerankd_batch_requests_count", "rerankd_batch_size_sum"}:
                values[s.name] = values.get(s.name, 0.0) + s.value
    count = values.get("rerankd_batch_requests_count", 0.0)
    total = values.get("rerankd_batch_requests_sum", 0.0)
    return total / max(count, 1.0), values.get("rerankd_batch_size_sum", 0.0) / max(count, 1.0), total, count


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model_dir: Path, port: int, max_wait_ms: float, extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "rerankd.cli", "serve", "--model", f"minilm={model_dir}", "--port", str(port),
           "--no-access-log", "--log-level", "warning", "--max-wait-ms", str(max_wait_ms), *extra]
    proc = subprocess.Popen(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"rerankd serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("rerankd serve did not become ready")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,8,16,32", help="concurrent clients per level")
    parser.add_argument("--requests", type=int, default=16, help="requests per level (at least one per client)")
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "rerankd-bench-models")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    import torch
    from transformers import AutoTokenizer

    from rerankd import Reranker

    model_dir = workload.build_shape("minilm", args.models_dir / "minilm")
    docs = workload.make_documents(AutoTokenizer.from_pretrained(str(model_dir)), workload.doc_token_lengths(100))
    sets = request_sets(docs)
    reranker = Reranker.from_pretrained(str(model_dir))  # the same defaults the server loads with
    described = reranker.describe()
    print(f"MiniLM-L6-H384 cross-encoder (random weights), 1 query × {DOCS_PER_REQUEST} docs per request, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"{described['device']} {described['dtype']}, batch_tokens {described['batch_tokens']}", flush=True)
    offline_slice(reranker, sets, range(len(sets)))  # warm-up

    worker = ThreadPoolExecutor(1, thread_name_prefix="offline")
    worker.submit(offline_slice, reranker, sets, range(len(sets))).result()  # warm-up on that thread too
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(model_dir, port, args.max_wait_ms)
    rows = []
    try:
        asyncio.run(server_slice(url, sets, len(sets), 1))  # warm-up, not counted
        for clients in levels:
            per_client = max(1, args.requests // clients)
            total = clients * per_client
            half = total // 2
            # main-thread offline, worker-thread offline, server, worker-thread, main-thread (A-B-C-B-A).
            p1, t1 = offline_slice(reranker, sets, range(half))
            q1, u1 = worker.submit(offline_slice, reranker, sets, range(half)).result()
            before = merge_stats(url)
            pairs, wall, lat, errors = asyncio.run(server_slice(url, sets, clients, per_client))
            after = merge_stats(url)
            q2, u2 = worker.submit(offline_slice, reranker, sets, range(half, total)).result()
            p2, t2 = offline_slice(reranker, sets, range(half, total))
            offline, offline_thread = (p1 + p2) / (t1 + t2), (q1 + q2) / (u1 + u2)
            merged = (after[2] - before[2]) / max(1.0, after[3] - before[3])
            rows.append((clients, pairs / wall, offline, offline_thread, lat, errors, merged))
            print(f"{clients:>3} clients: server {pairs / wall:6.1f} pairs/s, offline {offline:6.1f} pairs/s, "
                  f"offline on a worker thread {offline_thread:6.1f} pairs/s "
                  f"({100 * pairs / wall / max(offline, offline_thread):.0f}% of the faster), "
                  f"p50 {1000 * statistics.median(lat):7.0f} ms, "
                  f"p99 {1000 * float(np.percentile(lat, 99)):7.0f} ms, {len(lat)} requests, {errors} errors, "
                  f"{merged:.2f} requests per batch", flush=True)
    finally:
        proc.terminate()
        proc.wait(60)

    print("\n| clients | requests | server pairs/s | offline pairs/s (main thread) | offline pairs/s (worker thread) "
          "| server / faster offline | p50 ms | p99 ms | requests per batch | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for clients, server_ps, offline_ps, thread_ps, lat, errors, merged in rows:
        best = max(offline_ps, thread_ps)
        print(f"| {clients} | {len(lat)} | {server_ps:.1f} | {offline_ps:.1f} | {thread_ps:.1f} | {100 * server_ps / best:.0f}% | "
              f"{1000 * statistics.median(lat):.0f} | {1000 * float(np.percentile(lat, 99)):.0f} | {merged:.2f} | {errors} |")
    # Judged against the faster offline figure: the server's forward runs on a worker thread, and on
    # some machines torch is faster there than on the main thread.
    worst = min((s / max(o, t) for c, s, o, t, *_ in rows if c >= 16), default=None)
    if worst is not None:
        verdict = "met" if worst >= TARGET else "missed"
        print(f"\ntarget (≥ {TARGET:.0%} of offline at 16+ clients): {verdict}, worst {worst:.0%}")


if __name__ == "__main__":
    main()
