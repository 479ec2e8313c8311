"""Memory budgets (rerankd.memory, --max-memory) and the memory figures rerankd reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rerankd.errors import InputError
from rerankd.memory import (RUNTIME_BYTES, Candidate, ModelWeights, candidates, estimate_peak_bytes, fit_to_budget,
                            parse_size, read_weights)

GIB = 2**30


@pytest.mark.parametrize("text,expected", [("2.5GB", 2_500_000_000), ("1800MiB", 1800 * 2**20), ("3g", 3 * 10**9),
                                           ("1024", 1024), (" 2 GiB ", 2 * GIB), (4096, 4096)])
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "2.5 parsecs", "-1GB", "0", "1e9"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(InputError, match="size"):
        parse_size(text)


# bge-reranker-v2-m3's shape: 568M parameters in fp32, the largest tensor its 250002 x 1024 embedding table.
XLMR = ModelWeights(parameters=567_755_777, largest_tensor=250_002 * 1024, file_bytes_per_element=4)


def test_estimate_counts_model_conversion_and_runtime() -> None:
    assert estimate_peak_bytes(XLMR, "float32") == RUNTIME_BYTES + 4 * XLMR.parameters
    assert estimate_peak_bytes(XLMR, "bfloat16") == RUNTIME_BYTES + 2 * XLMR.parameters + 4 * XLMR.largest_tensor
    assert estimate_peak_bytes(XLMR, "float32", int8_linear=True) == estimate_peak_bytes(XLMR, "float32")


def test_candidates_per_cpu_class() -> None:
    # native bf16: bf16 is the default and the smallest; nothing else to fall back to
    assert candidates("torch", None, "cpu", "bfloat16") == [Candidate("torch", "bfloat16")]
    # AVX2 only: int8 linear layers before the emulated (very slow) bf16
    assert candidates("torch", None, "cpu", "float32") == [
        Candidate("torch", "float32"), Candidate("torch-int8", "int8"), Candidate("torch", "bfloat16")]
    # the user's explicit choice is only checked
    assert candidates("torch", "float32", "cpu", "bfloat16") == [Candidate("torch", "float32")]
    assert candidates("torch-int8", None, "cpu", "float32") == [Candidate("torch-int8", "int8")]


def test_fit_takes_the_first_that_fits_and_says_why() -> None:
    options = candidates("torch", None, "cpu", "float32")
    fp32_peak = options[0].peak_bytes(XLMR)
    chosen, why = fit_to_budget(XLMR, options, fp32_peak)
    assert chosen == options[0] and "within --max-memory" in why
    chosen, why = fit_to_budget(XLMR, options, fp32_peak - 1)
    # int8 loads in fp32 first: it needs as much as fp32, so bf16 is what fits below fp32's peak
    assert chosen == Candidate("torch", "bfloat16") and "torch float32 needs about" in why


def test_fit_refuses_naming_budget_and_smallest() -> None:
    with pytest.raises(InputError) as info:
        fit_to_budget(XLMR, candidates("torch", None, "cpu", "bfloat16"), GIB)
    message = str(info.value)
    assert "--max-memory 1.00 GiB" in message and "torch bfloat16" in message and "568M parameters" in message


def test_read_weights_from_headers(bert_ce: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(bert_ce / "model.safetensors"), framework="pt") as fh:
        sizes = [fh.get_slice(key).get_shape() for key in fh.keys()]
    counts = [int(__import__("math").prod(shape)) for shape in sizes]
    weights = read_weights(bert_ce)
    assert weights is not None
    assert weights.parameters == sum(counts) and weights.largest_tensor == max(counts)
    assert weights.file_bytes_per_element == 4
    assert read_weights(bert_ce / "nowhere") is None


def test_from_pretrained_fits_budget(bert_ce: Path) -> None:
    from rerankd import Reranker

    roomy = Reranker.from_pretrained(bert_ce, max_memory="64GB", dtype="fp32")
    info = roomy.describe()
    assert info["dtype"] == "float32" and "within --max-memory" in info["memory_choice"]
    assert info["peak_rss_mib"] > 0 and "asked for" in info["dtype_choice"]
    with pytest.raises(InputError, match="does not fit --max-memory"):
        Reranker.from_pretrained(bert_ce, max_memory="1MB")


def test_info_reports_choice_and_memory(bert_ce: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "rerankd.cli", "info", "--model", str(bert_ce), "--max-memory", "64GB"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["peak_rss_mib"] > 0 and info["dtype_choice"] and "within --max-memory" in info["memory_choice"]
    bad = subprocess.run([sys.executable, "-m", "rerankd.cli", "info", "--model", str(bert_ce), "--max-memory", "lots"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "is not a size" in bad.stderr and "Traceback" not in bad.stderr


def test_torch_threads_follow_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads = the usable cores (a container's CPU quota: here 1, then 4), lowered by OMP_NUM_THREADS."""
    import torch

    from rerankd import hardware
    from rerankd.backends.torch_backend import follow_usable_cores

    before = torch.get_num_threads()
    real = hardware.cpu_info()
    monkeypatch.setattr(hardware, "cpu_info", lambda: hardware.CpuInfo(real.model, real.flags, real.physical_cores, 1))
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        assert follow_usable_cores(torch) == 1 == torch.get_num_threads()
        monkeypatch.setattr(hardware, "cpu_info", lambda: hardware.CpuInfo(real.model, real.flags, real.physical_cores, 4))
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(1)  # torch's current setting is rerankd's own last choice: not read
        assert follow_usable_cores(torch) == 2 == torch.get_num_threads()
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert follow_usable_cores(torch) == 4
    finally:
        torch.set_num_threads(before)


def test_a_mapped_embedding_table_is_not_counted_resident(bert_ce: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An fp32 table loaded in fp32 stays mapped (backends/weights.py), so fp32's estimate leaves it out;
    bf16 converts it, so bf16's counts it. XLM-R large's table is 45% of its parameters."""
    mapped = ModelWeights(XLMR.parameters, XLMR.largest_tensor, 4, {"float32": 250_002 * 1024})
    assert estimate_peak_bytes(mapped, "float32") == RUNTIME_BYTES + 4 * (XLMR.parameters - 250_002 * 1024)
    assert estimate_peak_bytes(mapped, "bfloat16") == estimate_peak_bytes(XLMR, "bfloat16")
    assert estimate_peak_bytes(mapped, "float32", int8_linear=True) == estimate_peak_bytes(mapped, "float32")

    from rerankd.backends import weights

    assert read_weights(bert_ce).mapped_elements == {}  # a tiny table: read like any other tensor
    monkeypatch.setattr(weights, "_BLOCKWISE_ABOVE", 0)
    table = _table_elements(bert_ce)
    assert read_weights(bert_ce).mapped_elements == {"float32": table}


def _table_elements(model_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as fh:
        (key,) = [k for k in fh.keys() if k.endswith("word_embeddings.weight")]
        rows, cols = fh.get_slice(key).get_shape()
    return rows * cols
