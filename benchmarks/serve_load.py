"""`rerankd serve` under bounded load on loopback, against `Reranker.score` offline on the same pairs.

Each client sends 1 query × 20 documents of the rerank-100 workload (real SciFact text cut to the
workload's lognormal token lengths), waits for the answer and sends the next, for a fixed time per
concurrency level. The server runs as a separate `rerankd serve` process with the MiniLM-L6
cross-encoder shape (random weights, ms-marco tokenizer); offline pairs/s is measured in this process
on the same 20-document requests, before and after the load (the machine is shared: the lower of
the two ratios is the one reported against the target).

Target: at 16 and more concurrent clients the server delivers ≥ 85% of offline pairs/s.

Usage: python benchmarks/serve_load.py [--levels 1,8,16,32] [--seconds 8]
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


def offline_pairs_per_second(model_dir: Path, sets: list[list[str]], seconds: float) -> tuple[float, dict[str, Any]]:
    from rerankd import Reranker

    reranker = Reranker.from_pretrained(str(model_dir))  # the same defaults the server loads with
    for docs in sets:
        reranker.score(workload.QUERY, docs)  # warm-up
    pairs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for docs in sets:
            reranker.score(workload.QUERY, docs)
            pairs += len(docs)
    return pairs / (time.perf_counter() - start), reranker.describe()


async def load(url: str, sets: list[list[str]], clients: int, seconds: float) -> tuple[float, list[float], int]:
    """Closed-loop clients for ``seconds``; returns (pairs/s, latencies in s, errors)."""
    latencies: list[float] = []
    errors = 0
    pairs = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def one(k: int) -> None:
            nonlocal errors, pairs
            docs = sets[k % len(sets)]
            start = time.perf_counter()
            r = await client.post("/v1/rerank", json={"model": "minilm", "query": workload.QUERY, "documents": docs})
            if r.status_code != 200:
                errors += 1
                return
            latencies.append(time.perf_counter() - start)
            pairs += len(docs)

        await asyncio.gather(*(one(k) for k in range(clients)))  # warm-up round, not counted
        latencies.clear()
        pairs = 0
        stop = time.perf_counter() + seconds

        async def worker(c: int) -> None:
            k = c
            while time.perf_counter() < stop:
                await one(k)
                k += clients

        start = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in range(clients)))
        wall = time.perf_counter() - start
    return pairs / wall, latencies, errors


def merge_stats(url: str) -> tuple[float, float]:
    """(mean requests per batch, mean sequences per batch) from the server's /metrics so far."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in family.samples:
            if s.name in {"rerankd_batch_requests_sum", "rerankd_batch_requests_count", "rerankd_batch_size_sum"}:
                values[s.name] = values.get(s.name, 0.0) + s.value
    count = values.get("rerankd_batch_requests_count", 0.0) or 1.0
    return values.get("rerankd_batch_requests_sum", 0.0) / count, values.get("rerankd_batch_size_sum", 0.0) / count


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model_dir: Path, port: int, max_wait_ms: float) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "rerankd.cli", "serve", "--model", f"minilm={model_dir}", "--port", str(port),
           "--no-access-log", "--log-level", "warning", "--max-wait-ms", str(max_wait_ms)]
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
    parser.add_argument("--seconds", type=float, default=8.0, help="load time per level")
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    parser.add_argument("--models-dir", type=Path, default=Path(tempfile.gettempdir()) / "rerankd-bench-models")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    import torch
    from transformers import AutoTokenizer

    model_dir = workload.build_shape("minilm", args.models_dir / "minilm")
    docs = workload.make_documents(AutoTokenizer.from_pretrained(str(model_dir)), workload.doc_token_lengths(100))
    sets = request_sets(docs)
    print(f"MiniLM-L6-H384 cross-encoder (random weights), 1 query × {DOCS_PER_REQUEST} docs per request, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads", flush=True)

    offline_before, described = offline_pairs_per_second(model_dir, sets, args.seconds)
    print(f"offline Reranker.score before the load: {offline_before:.1f} pairs/s "
          f"({described['device']}, {described['dtype']}, batch_tokens {described['batch_tokens']})", flush=True)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(model_dir, port, args.max_wait_ms)
    rows = []
    try:
        for clients in levels:
            before = merge_stats(url)
            pairs_per_s, lat, errors = asyncio.run(load(url, sets, clients, args.seconds))
            rows.append((clients, pairs_per_s, lat, errors))
            p50 = 1000 * statistics.median(lat)
            p99 = 1000 * float(np.percentile(lat, 99))
            print(f"{clients:>3} clients: {pairs_per_s:7.1f} pairs/s, p50 {p50:7.1f} ms, p99 {p99:7.1f} ms, "
                  f"{len(lat)} requests, {errors} errors (mean requests/batch so far {merge_stats(url)[0]:.2f}, "
                  f"before {before[0]:.2f})", flush=True)
        requests_per_batch, rows_per_batch = merge_stats(url)
    finally:
        proc.terminate()
        proc.wait(60)

    offline_after, _ = offline_pairs_per_second(model_dir, sets, args.seconds)
    offline = max(offline_before, offline_after)
    print(f"offline Reranker.score after the load: {offline_after:.1f} pairs/s\n")
    print(f"| clients | server pairs/s | p50 ms | p99 ms | % of offline ({offline:.1f} pairs/s) | errors |")
    print("|---|---|---|---|---|---|")
    for clients, pairs_per_s, lat, errors in rows:
        print(f"| {clients} | {pairs_per_s:.1f} | {1000 * statistics.median(lat):.1f} | "
              f"{1000 * float(np.percentile(lat, 99)):.1f} | {100 * pairs_per_s / offline:.0f}% | {errors} |")
    print(f"\nmean requests per batch over the run: {requests_per_batch:.2f}, mean sequences per batch: {rows_per_batch:.1f}")
    worst = min((p / offline for c, p, _, _ in rows if c >= 16), default=None)
    if worst is not None:
        verdict = "met" if worst >= TARGET else "missed"
        print(f"target (≥ {TARGET:.0%} of offline at 16+ clients): {verdict}, worst {worst:.0%}")


if __name__ == "__main__":
    main()
