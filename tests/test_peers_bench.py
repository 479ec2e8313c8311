"""benchmarks/peers.py: the worker protocol, the score space shared by rerankd and a peer, competitors.

Runs workers in this environment only (rerankd and sentence-transformers on a tiny model); the peers'
own virtualenvs are the benchmark's business, not CI's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import peers

QUERY = "What is the capital of France?"
DOCS = ["Paris is the capital and largest city of France.", "Bananas are a yellow fruit rich in potassium.",
        "The Eiffel Tower was completed in 1889 for the World's Fair, in Paris, the capital of France."]


def _worker(key: str, kind: str, options: dict, logs: Path) -> peers.Worker:
    spec = {"kind": kind, "options": options, "query": QUERY, "docs": DOCS, "warmup": 1}
    return peers.Worker(key, Path(sys.executable), spec, logs, "main")


def test_worker_protocol_and_shared_score_space(bert_ce: Path, tmp_path: Path) -> None:
    from rerankd import Reranker

    ours = _worker("rerankd-fp32", "rerankd", {"model": str(bert_ce), "kwargs": {"backend": "torch", "dtype": "fp32"}}, tmp_path)
    theirs = _worker("st", "st", {"model": str(bert_ce)}, tmp_path)
    try:
        ready_ours, ready_theirs = ours.read(), theirs.read()
        assert ours.time() > 0 and theirs.time() > 0  # a second round works too
        assert ours.time() > 0
    finally:
        ours.close()
        theirs.close()
    expected = Reranker.from_pretrained(str(bert_ce), backend="torch", dtype="fp32").score(QUERY, DOCS)
    assert ready_ours["scores"] == pytest.approx(expected, abs=1e-6)
    # The ST CrossEncoder's sigmoid scores and rerankd's normalized ones are one space: same model, same numbers.
    assert ready_theirs["scores"] == pytest.approx(expected, abs=1e-4)
    assert ready_ours["peak_rss"] >= ready_ours["rss"] > 0
    assert "torch" in ready_ours["versions"] and ready_ours["info"]["describe"]["dtype"] == "float32"
    assert ours.proc.returncode == 0 and theirs.proc.returncode == 0


def test_worker_load_failure_is_reported(tmp_path: Path) -> None:
    worker = _worker("broken", "rerankd", {"model": str(tmp_path / "no-such-model")}, tmp_path)
    try:
        with pytest.raises(peers.WorkerError, match="no-such-model"):
            worker.read()
    finally:
        worker.close()


def test_competitors_run_until_stopped() -> None:
    procs = peers.start_competitors(1, "python")
    try:
        assert len(procs) == 1 and procs[0].poll() is None
        time.sleep(0.2)
        assert procs[0].poll() is None
    finally:
        peers.stop_competitors(procs)
    assert procs[0].returncode is not None


def test_flashrank_layout(bert_ce: Path, tmp_path: Path) -> None:
    shape = peers.Shape("tiny", bert_ce, tmp_path / "work", tmp_path / "onnx")
    graph = tmp_path / "graph" / "model.onnx"
    graph.parent.mkdir()
    graph.write_bytes(b"graph")
    model_name, file_name = peers.FLASHRANK_SLOTS["onnx"]
    out = tmp_path / "flashrank" / model_name
    peers._flashrank_dir(shape, graph, out, file_name)
    # What flashrank.Ranker reads: its graph under the mapped name and four tokenizer/config files.
    assert (out / file_name).read_bytes() == b"graph"
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (out / name).exists(), name
    import json

    assert json.loads((out / "config.json").read_text())["pad_token_id"] is not None
    assert "pad_token" in json.loads((out / "special_tokens_map.json").read_text())


def test_rows_name_known_environments() -> None:
    for key, row in peers.ALL_ROWS.items():
        assert row.env == "main" or row.env in peers.VENVS, key
    assert peers.ANCHOR in peers.ROWS and peers.REFERENCE in peers.ROWS


@pytest.mark.parametrize(("cpu_class", "kept", "dropped"), [
    ("avx2", {"avx2"}, {"avx512f", "avx512_bf16", "amx_bf16"}),
    ("avx512_bf16", {"avx512f", "avx512_bf16", "avx512_vnni"}, {"amx_bf16", "amx_tile", "avx512_fp16"}),
])
def test_each_emulated_class_caps_to_a_level_rerankd_and_onednn_know(cpu_class: str, kept: set[str], dropped: set[str]) -> None:
    """``--cpu-isa``'s oneDNN cap is a level name rerankd reads as oneDNN does (a misspelt one would be
    ignored by both, and the "emulated" rows would run the whole CPU)."""
    from rerankd.hardware import cap_flags

    whole = {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8"}
    flags = cap_flags(whole, peers.CPU_CLASSES[cpu_class]["ONEDNN_MAX_CPU_ISA"])
    assert kept <= flags and not flags & dropped
    assert set(peers.OPENVINO_PRECISION) <= set(peers.CPU_CLASSES)


def test_cpu_worker_env_carries_the_emulated_class(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in peers.CPU_CLASSES["avx2"].items():
        monkeypatch.setenv(key, value)
    for env in ("main", "st"):
        environ = peers.worker_env(env)
        assert all(environ[k] == v for k, v in peers.CPU_CLASSES["avx2"].items())
