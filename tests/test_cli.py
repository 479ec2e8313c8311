"""The rerankd command line, run as a user runs it: a subprocess, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DOCS = [
    "Bananas are a yellow fruit rich in potassium.",
    "Paris is the capital and largest city of France.",
    "The stock market fell sharply on Monday after weak earnings reports.",
]


def rerankd(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "rerankd.cli", *args], input=stdin, capture_output=True, text=True, env=full_env, timeout=300)


def test_rank_with_no_model_uses_the_bundled_model_offline() -> None:
    proc = rerankd("rank", "--query", "What is the capital of France?", "--documents", "-", stdin="\n".join(DOCS))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert out["results"][0]["index"] == 1
    assert out["results"][0]["document"] == DOCS[1]
    assert out["results"][0]["score"] > out["results"][1]["score"]


def test_rank_reads_jsonl_and_honours_top_n(bert_ce: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text("\n".join(json.dumps({"text": d}) for d in DOCS) + "\n")
    proc = rerankd("rank", "--model", str(bert_ce), "-q", "capital of France", "-d", str(docs), "--top-n", "2", "--no-documents")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert len(results) == 2 and "document" not in results[0]


def test_model_can_come_from_the_environment(bert_ce: Path) -> None:
    proc = rerankd("info", env={"RERANKD_MODEL": str(bert_ce), "RERANKD_DTYPE": "fp32"})
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["family"] == "cross-encoder" and info["dtype"] == "float32"


def test_info_describes_the_model(qwen3_lm: Path) -> None:
    proc = rerankd("info", "--model", str(qwen3_lm))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["family"] == "llm-yes-no"
    assert info["architecture"] == "Qwen3ForCausalLM"
    assert info["parameters"] > 0 and info["max_length"] == 8192 and info["device"] == "cpu"


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    proc = rerankd("rank", "--model", str(tmp_path), "-q", "x", "-d", "-", stdin="a doc\n")
    assert proc.returncode == 2
    assert "is not a model directory: it has no config.json" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"text": "fine"}\n{"text": broken\n')
    proc = rerankd("rank", "-q", "x", "-d", str(docs))
    assert proc.returncode == 2
    assert f"{docs}:2: not valid JSON" in proc.stderr
