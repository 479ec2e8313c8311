"""benchmarks/gpu_check.py on a CPU: its configs, workloads and report, and a clean exit without a GPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def test_the_real_configs_have_the_real_sizes(gpu_check) -> None:  # type: ignore[no-untyped-def]
    out = gpu_check.dry_run(list(gpu_check.shapes()), gpu_check.DEFAULT_BUDGETS)
    sizes = {row["model"]: row["parameters"] for row in out["models"]}
    assert 22e6 < sizes["minilm"] < 23e6
    assert 555e6 < sizes["xlmr-large"] < 565e6
    assert 590e6 < sizes["qwen3-0.6b"] < 600e6
    assert 4.0e9 < sizes["qwen3-4b"] < 4.05e9
    for row in out["models"]:
        assert row["pairs"] == 100 and row["longest"] <= gpu_check.shapes()[row["model"]].max_length
        assert row["tflop_per_rerank100"] > 0


def test_llm_workloads_share_their_prompt_and_encoders_carry_segment_ids(gpu_check) -> None:  # type: ignore[no-untyped-def]
    from rerankd.backends.packed import shared_prefix_length

    table = gpu_check.shapes()
    qwen = gpu_check.sequences(table["qwen3-0.6b"], 20)
    assert shared_prefix_length(qwen) >= table["qwen3-0.6b"].prefix_tokens + table["qwen3-0.6b"].query_tokens
    bert = gpu_check.sequences(table["minilm"], 5)
    assert all(s.token_type_ids is not None and len(s.token_type_ids) == len(s) for s in bert)
    fixed = gpu_check.sequences(table["xlmr-large"], 3, doc_length=240)
    assert len({len(s) for s in fixed}) == 1


def test_without_a_gpu_it_exits_cleanly_with_a_message(gpu_check, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would run")
    assert gpu_check.main(["--models", "minilm"]) == 0
    assert "no CUDA GPU" in capsys.readouterr().out
    assert gpu_check.main(["--dry-run", "--models", "minilm"]) == 0
    assert '"minilm"' in capsys.readouterr().out


def test_the_report_and_targets_read_a_run(gpu_check) -> None:  # type: ignore[no-untyped-def]
    speed = {"bf16 padded @ 8192": {"pairs_per_s": 1000.0, "tokens_per_s": 2e5, "peak_pct": 30.0},
             "bf16 packed @ 8192": {"pairs_per_s": 1800.0, "tokens_per_s": 3.6e5, "peak_pct": 54.0}}
    report = {"device": "GPU", "torch": "2.11", "transformers": "5.17", "peak_tflops": 800.0,
              "models": [{"model": "qwen3-0.6b", "attention": "varlen", "peak_memory_bytes": 2**31,
                          "bf16 padded vs fp32": {"max_abs_delta": 0.01, "spearman": 0.999},
                          "bf16 packed vs fp32": {"max_abs_delta": 0.02, "spearman": 0.998},
                          "packed vs padded": {"max_abs_delta": 0.01, "spearman": 0.999},
                          "speed": speed, "memory_plan": {"budget_tokens": 65536}}],
              "oom": {"backoffs": 2}, "quantized": [{"model": "qwen3-0.6b", "quantization": "bnb-4bit", "skipped": "no library"}]}
    report["targets"] = gpu_check.targets(report)
    assert report["targets"]["Qwen3-0.6B ≥ 1.7k pairs/s"].endswith("PASS")
    assert report["targets"]["qwen3-0.6b packed ≥ 1.5× padded"] == "1.80× PASS"
    text = gpu_check.markdown(report)
    assert "| qwen3-0.6b | varlen |" in text and "no library" in text and "65536 tokens" in text
