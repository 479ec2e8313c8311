"""Ray Data batch scoring: the same run file as the single-process eval, byte for byte, and resumable.

20 Cranfield queries × 20 BM25 candidates, a tiny random cross-encoder, ``concurrency=2`` actors on the
session's local Ray (2 CPUs).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_models import DATA

from rerankd.cli import main

CRANFIELD = DATA / "cranfield"
QUERIES, K = 20, 20
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (CRANFIELD / "corpus.jsonl").exists(), reason="needs ../shared/data/cranfield")]


def eval_args(model: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["eval", "run", "--data", str(CRANFIELD), "--max-queries", str(QUERIES), "--k", str(K), "-m", str(model),
            "--chunk-pairs", "40", "--dtype", "fp32", "--cache-dir", str(cache), "--out", str(out), "--no-progress",
            "--no-charts", *extra]


def one_thread(args: list[str]) -> None:
    """The single-process reference, in a process on 1 thread, as the half-CPU actors run.

    oneDNN lays out the reordered fp32 weights for the threads of the process it starts in, and the
    layout decides the last bits of a score; the same chunks on the same threads give the same bytes.
    """
    done = subprocess.run([sys.executable, "-m", "rerankd.cli", *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def run_file(out: Path) -> bytes:
    (path,) = [p for p in (out / "runs").glob("*.trec") if not p.name.startswith("bm25")]
    return path.read_bytes()


@pytest.fixture(scope="module")
def index_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray-eval-cache")


@pytest.fixture(scope="module")
def single_process(tmp_path_factory: pytest.TempPathFactory, bert_ce: Path, index_cache: Path) -> Path:
    out = tmp_path_factory.mktemp("eval-local")
    one_thread(eval_args(bert_ce, out, index_cache))
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, single_process: Path) -> dict[str, Path]:
    """score-run's inputs: the 20 queries as Parquet, the corpus as JSONL, the BM25 run as candidate JSONL."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("score-run-inputs")
    (bm25,) = (single_process / "runs").glob("bm25*.trec")
    run: dict[str, list[tuple[str, float]]] = {}
    for line in bm25.read_text().splitlines():
        qid, _, docid, _, score, _ = line.split()
        run.setdefault(qid, []).append((docid, float(score)))
    rows = [json.loads(line) for line in (CRANFIELD / "queries.jsonl").read_text().splitlines() if line.strip()]
    rows = [{"_id": str(r["_id"]), "text": r["text"]} for r in rows if str(r["_id"]) in run]
    pq.write_table(pa.Table.from_pylist(rows), folder / "queries.parquet")
    with open(folder / "candidates.jsonl", "w") as fh:
        for qid, docs in run.items():
            for docid, score in docs:
                fh.write(json.dumps({"qid": qid, "docid": docid, "score": score}) + "\n")
    return {"queries": folder / "queries.parquet", "corpus": CRANFIELD / "corpus.jsonl",
            "candidates": folder / "candidates.jsonl"}


def score_run_args(model: Path, inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["score-run", "--queries", str(inputs["queries"]), "--corpus", str(inputs["corpus"]), "--candidates",
            str(inputs["candidates"]), "--depth", str(K), "-m", str(model), "--dtype", "fp32", "--chunk-pairs", "20",
            "--out", str(out), "--no-progress", "--tag", "t", *extra]


def test_eval_on_ray_data_writes_the_single_process_run_file(local_ray: str, single_process: Path, bert_ce: Path,
                                                             index_cache: Path, tmp_path: Path) -> None:
    assert main(eval_args(bert_ce, tmp_path, index_cache, "--engine", "ray", "--concurrency", "2",
                          "--actor-cpus", "0.5")) == 0
    assert run_file(tmp_path) == run_file(single_process)
    assert len(run_file(tmp_path).splitlines()) == QUERIES * K


def test_score_run_on_ray_is_byte_identical_and_resumes_after_a_kill(local_ray: str, bert_ce: Path,
                                                                     inputs: dict[str, Path], tmp_path: Path) -> None:
    local = tmp_path / "local.trec"
    one_thread(score_run_args(bert_ce, inputs, local))

    # Killed mid-way (a subprocess on the session's Ray), then the same command again: only the rest is scored.
    out = tmp_path / "ray.trec"
    cache = Path(str(out) + ".scores.jsonl")
    command = [sys.executable, "-m", "rerankd.cli", *score_run_args(bert_ce, inputs, out, "--engine", "ray",
                                                                    "--concurrency", "2", "--actor-cpus", "0.5")]
    env = {**os.environ, "RAY_ADDRESS": local_ray}
    job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while (not cache.exists() or len(cache.read_text().splitlines()) < 4) and job.poll() is None:
        assert time.monotonic() < deadline, "no chunk was scored in 300 s"
        time.sleep(0.1)
    job.send_signal(signal.SIGKILL)
    job.wait(30)
    chunks_before = len(cache.read_text().splitlines()) - 1
    assert not out.exists() and 0 < chunks_before < QUERIES  # killed mid-way: some chunks, no run file

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    scored_now = int(done.stderr.split(" pairs, ")[1].split(" scored now")[0])
    assert scored_now == (QUERIES - chunks_before) * K  # one query per chunk (20 pairs): only the rest
    assert out.read_bytes() == local.read_bytes()
