"""``rerankd eval`` end to end on a slice of real data (Cranfield) with a tiny random cross-encoder.

The uninterrupted run is made once per module; the killed-and-resumed run must reproduce its run file.
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
QUERIES = 24
K = 20
pytestmark = pytest.mark.skipif(not (CRANFIELD / "corpus.jsonl").exists(), reason="needs ../shared/data/cranfield")


def run_args(model: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    # one query per cache chunk, so a kill lands between many durable chunks
    return ["eval", "run", "--data", str(CRANFIELD), "--max-queries", str(QUERIES), "--k", str(K), "-m", str(model),
            "--chunk-pairs", "1", "--dtype", "fp32", "--cache-dir", str(cache), "--out", str(out), "--no-progress", *extra]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eval-cache")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, bert_ce: Path, cache_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("eval-full")
    assert main(run_args(bert_ce, out, cache_dir)) == 0
    return out


def reranked_run_file(out: Path) -> Path:
    (path,) = [p for p in (out / "runs").glob("*.trec") if not p.name.startswith("bm25")]
    return path


def test_run_writes_run_files_json_markdown_and_charts(uninterrupted: Path) -> None:
    runs = sorted(p.name for p in (uninterrupted / "runs").glob("*.trec"))
    assert len(runs) == 2 and runs[0].startswith("bert-ce")  # the reranked run and the first stage (bm25+stem+stop)
    lines = reranked_run_file(uninterrupted).read_text().splitlines()
    assert len(lines) == QUERIES * K and len(lines[0].split()) == 6

    metrics = json.loads((uninterrupted / "metrics.json").read_text())
    assert metrics["dataset"] == "cranfield" and metrics["queries"] == QUERIES and metrics["depth"] == K
    first, (reranked,) = metrics["first_stage"], metrics["rerankers"]
    assert first["label"] == "bm25+stem+stop" and 0.1 < first["mean"]["ndcg@10"] < 0.9
    assert reranked["settings"]["family"] == "cross-encoder" and reranked["pairs_per_s"] > 0
    # reranking the top-K only reorders it: recall at K and beyond is the first stage's
    assert reranked["mean"]["recall@100"] == pytest.approx(first["mean"]["recall@100"])
    assert set(reranked["tests"]["bm25+stem+stop"]["ndcg@10"]) >= {"t_p", "bootstrap_p", "delta"}
    assert len(reranked["per_query"]) == QUERIES

    report = (uninterrupted / "report.md").read_text()
    assert "| bm25+stem+stop |" in report and "| bert-ce torch/fp32 |" in report and "pairs/s" in report
    for chart in ("quality.png", "tradeoff.png"):
        assert (uninterrupted / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_killed_run_resumes_to_the_same_run_file(tmp_path: Path, bert_ce: Path, cache_dir: Path,
                                                 uninterrupted: Path) -> None:
    out = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "rerankd.cli", *run_args(bert_ce, out, cache_dir)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    scores = out / "scores" / "bert-ce_torch_fp32.jsonl"
    deadline = time.monotonic() + 240
    written = 0
    while time.monotonic() < deadline and proc.poll() is None:
        written = len(scores.read_bytes().splitlines()) - 1 if scores.exists() else 0
        if written >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    proc.stderr.close()  # type: ignore[union-attr]
    assert 3 <= written < QUERIES and not (out / "metrics.json").exists()  # really stopped mid-way

    assert main(run_args(bert_ce, out, cache_dir)) == 0
    assert reranked_run_file(out).read_bytes() == reranked_run_file(uninterrupted).read_bytes()
    # finished chunks were kept, not scored again: one line per query after the header
    assert len(scores.read_text().splitlines()) == 1 + QUERIES


def test_mismatched_score_cache_is_refused(uninterrupted: Path, bert_ce: Path, cache_dir: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    # same label, hence the same cache file, but another max length: its scores would differ
    assert main(run_args(bert_ce, uninterrupted, cache_dir, "--max-length", "128")) == 2
    err = capsys.readouterr().err
    assert "max_length=512 but this run has max_length=128" in err and "another output folder" in err, err


def test_chunked_eval_keys_its_cache_by_the_chunking(uninterrupted: Path, bert_ce: Path, cache_dir: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # The same cache file scored without chunking is refused for a chunked run, naming the field.
    assert main(run_args(bert_ce, uninterrupted, cache_dir, "--chunking", "max_chunks=3,overlap=8")) == 2
    assert "chunking=None but this run has chunking=" in capsys.readouterr().err
    assert main(run_args(bert_ce, uninterrupted, cache_dir, "--chunking", "max_chunks=x")) == 2
    assert "must be a whole number" in capsys.readouterr().err


def test_compare_puts_quality_and_speed_in_one_table(tmp_path: Path, bert_ce: Path, bi_encoder: Path, cache_dir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "compare"
    args = ["eval", "compare", "--data", str(CRANFIELD), "--max-queries", "8", "--k", "10", "--cache-dir", str(cache_dir),
            "--candidate", f"name={bert_ce},dtype=fp32,label=bert fp32",
            "--candidate", f"name={bert_ce},dtype=bf16,label=bert bf16",
            "--candidate", f"name={bi_encoder},label=bi-encoder",
            "--throughput-pairs", "40", "--repeats", "1", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    table = capsys.readouterr().out.split("\n\n")[1]  # the main table: one row per system
    header, _, *lines = table.strip().splitlines()
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")] for line in lines}
    assert list(cells) == ["bm25+stem+stop", "bert fp32", "bert bf16", "bi-encoder"]
    columns = [c.strip() for c in header.split("|")]
    assert "ndcg@10" in columns and "recall@100" in columns
    for label in ("bert fp32", "bert bf16", "bi-encoder"):
        assert float(cells[label][columns.index("pairs/s")]) > 0
        assert 0 <= float(cells[label][columns.index("ndcg@10")]) <= 1
    assert "## Against bert fp32" in (out / "report.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["settings"]["dtype"] for r in metrics["rerankers"]] == ["float32", "bfloat16", metrics["rerankers"][2]["settings"]["dtype"]]
    assert "interleaved" in metrics["speed"]
    assert (out / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    # the same pairs, the same model at two precisions: nearly the same ranking quality
    fp32, bf16 = (r["mean"]["ndcg@10"] for r in metrics["rerankers"][:2])
    assert abs(fp32 - bf16) < 0.1


def test_score_existing_run_files(uninterrupted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bm25 = uninterrupted / "runs" / "bm25_stem_stop.trec"
    args = ["eval", "score", "--qrels", str(CRANFIELD / "qrels" / "test.tsv"), "--run", str(bm25),
            "--run", str(reranked_run_file(uninterrupted)), "--metrics", "ndcg@10,mrr@10", "--json"]
    assert main(args) == 0
    scored = json.loads(capsys.readouterr().out)
    saved = json.loads((uninterrupted / "metrics.json").read_text())
    assert scored[str(bm25)]["mean"]["ndcg@10"] == pytest.approx(saved["first_stage"]["mean"]["ndcg@10"], abs=1e-9)
    test = scored[str(reranked_run_file(uninterrupted))]["tests_vs_first"]["ndcg@10"]
    assert test["delta"] == pytest.approx(saved["rerankers"][0]["mean"]["ndcg@10"] - saved["first_stage"]["mean"]["ndcg@10"])
