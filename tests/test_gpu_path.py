"""What of the GPU path a CPU can check: the fp32 head, device and quantization refusals, OOM back-off,
the packed-attention dispatch and its SDPA-per-sequence fallback. CI has no GPU; benchmarks/gpu_check.py
checks the rest on one."""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path
from typing import Any, Sequence

import httpx
import numpy as np
import pytest
import torch

from rerankd import Reranker
from rerankd.backends.packed import (
    VARLEN_POSITIONAL,
    attention_kernel,
    packed_attention,
    packing,
    packs_by_default,
    parameters_if_callable,
    sdpa_per_sequence,
    varlen_options,
    varlen_parameters,
)
from rerankd.backends.torch_backend import TorchBackend
from rerankd.backends.torch_modules import Fp32Head
from rerankd.cli import main
from rerankd.errors import InputError, InputTooLargeError, MissingDependencyError
from rerankd.families import Encoded, load_family
from rerankd.gpu_memory import SequenceTooLargeError, is_out_of_memory
from rerankd.gpu_quantization import check_checkpoint, check_quantization, quantization_config

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusals of a machine without CUDA")
QUERY = "what is the capital of France"


# -- precision: the head in fp32 ---------------------------------------------------------------------


def test_bf16_cross_encoder_runs_its_head_in_fp32_and_keeps_scores_apart(bert_ce: Path, sentences: list[str]) -> None:
    family = load_family(bert_ce)
    backend = TorchBackend(family, device="cpu", dtype="bf16", packed=False)
    model = backend.module.model
    assert isinstance(model.classifier, Fp32Head) and isinstance(model.bert.pooler, Fp32Head)
    assert all(p.dtype == torch.float32 for p in model.classifier.parameters())
    assert model.bert.encoder.layer[0].attention.self.query.weight.dtype == torch.bfloat16  # the body stays bf16
    seen: list[torch.dtype] = []
    model.classifier.inner.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    docs = [f"{s} {i}" for i, s in enumerate(sentences * 5)]
    bf16 = Reranker(family, backend)
    scores = bf16.score(QUERY, docs, raw=True)
    assert seen and set(seen) == {torch.float32}
    assert len(set(scores)) == len(docs), "bf16 scores collapsed into ties"
    fp32 = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="fp32").score(QUERY, docs, raw=True)
    assert np.max(np.abs(np.array(scores) - np.array(fp32))) < 0.15 * (np.ptp(fp32) + 1e-9)
    # The packed module reads the same wrapped head.
    packed = Reranker(family, TorchBackend(family, device="cpu", dtype="bf16", packed=True)).score(QUERY, docs, raw=True)
    assert np.allclose(packed, scores, atol=0.1 * (np.ptp(fp32) + 1e-9))


def test_fp32_models_are_left_as_they_are(bert_ce: Path) -> None:
    backend = TorchBackend(load_family(bert_ce), device="cpu", dtype="fp32", packed=False)
    assert not isinstance(backend.module.model.classifier, Fp32Head)


def test_yes_no_row_is_fp32_in_a_bf16_llm(qwen3_lm: Path, sentences: list[str]) -> None:
    family = load_family(qwen3_lm)
    backend = TorchBackend(family, device="cpu", dtype="bf16", packed=False)
    assert backend.module.head_row.dtype == torch.float32
    from rerankd import Document

    seqs = family.prepare(Document.text(QUERY), [Document.text(s) for s in sentences]).sequences
    with torch.inference_mode():
        from rerankd.batching import pad_batch

        batch = pad_batch(seqs, family.padding)
        out = backend.module(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask))
    assert out.dtype == torch.float32 and len(set(out.tolist())) == len(seqs)


# -- devices: one clear error --------------------------------------------------------------------------


@no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "mps"])
def test_a_missing_device_is_one_clear_error(bert_ce: Path, device: str, capsys: pytest.CaptureFixture[str]) -> None:
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(InputError, match="not available here.*--device cpu"):
        Reranker.from_pretrained(str(bert_ce), device=device)
    assert main(["info", "--model", str(bert_ce), "--device", device]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rerankd: error:") and "not available" in err[0]


def test_unknown_device_names_the_choices() -> None:
    from rerankd.device import resolve_device

    with pytest.raises(InputError, match="auto, cpu, cuda, cuda:N or mps"):
        resolve_device("tpu")


# -- quantization: refused clearly where it cannot run ------------------------------------------------


def test_quantization_needs_a_cuda_device() -> None:
    for name in ("bnb-4bit", "bnb-8bit", "int8-weight", "fp8"):
        with pytest.raises(InputError, match=f"--quantization {name} needs a CUDA GPU, and the device is 'cpu'"):
            check_quantization(name, "cpu")
    with pytest.raises(InputError, match="unknown quantization 'int3'"):
        check_quantization("int3", "cuda")


@pytest.mark.parametrize("name,pip", [("bnb-4bit", "pip install bitsandbytes"), ("bnb-8bit", "pip install bitsandbytes"),
                                      ("int8-weight", "pip install torchao"), ("fp8", "pip install accelerate")])
def test_quantization_without_its_library_names_the_pip_command(name: str, pip: str) -> None:
    with pytest.raises(MissingDependencyError, match=pip):
        check_quantization(name, "cuda", capability=(9, 0), available=lambda module: False)


def test_fp8_needs_compute_capability_8_9() -> None:
    with pytest.raises(InputError, match="compute capability 8.9.*cuda is 8.0"):
        check_quantization("fp8", "cuda", capability=(8, 0), available=lambda module: True)
    assert check_quantization("fp8", "cuda", capability=(9, 0), available=lambda module: True).name == "fp8"


def test_the_head_is_in_every_configs_skip_list() -> None:
    bnb = quantization_config("bnb-4bit", "pair-logit", torch.bfloat16)
    assert {"classifier", "score", "pooler"} <= set(bnb.llm_int8_skip_modules) and bnb.load_in_4bit
    eight = quantization_config("bnb-8bit", "yes-no-row", torch.bfloat16)
    assert "lm_head" in eight.llm_int8_skip_modules and eight.load_in_8bit


def test_prequantized_checkpoints_are_checked_before_loading() -> None:
    config = {"quantization_config": {"quant_method": "awq"}}
    with pytest.raises(InputError, match="quantized \\(awq\\), which needs a CUDA GPU"):
        check_checkpoint(config, "cpu")
    with pytest.raises(MissingDependencyError, match="pip install autoawq"):
        check_checkpoint(config, "cuda", available=lambda module: False)
    assert check_checkpoint({}, "cpu") is None


def test_cli_refuses_quantization_on_cpu_and_on_other_backends(bert_ce: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--model", str(bert_ce), "--device", "cpu", "--quantization", "bnb-8bit"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert main(["info", "--model", str(bert_ce), "--backend", "onnx", "--quantization", "bnb-4bit"]) == 2
    assert "apply to the torch backend" in capsys.readouterr().err


@no_cuda
def test_quantize_on_cuda_goes_through_the_same_command_and_is_refused_here(bert_ce: Path, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "q"
    assert main(["quantize", "--model", str(bert_ce), "--to", "bnb-4bit", "--device", "cuda", "--out", str(out)]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert main(["quantize", "--model", str(bert_ce), "--to", "bnb-4bit", "--out", str(out)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not out.exists()


def test_info_says_what_the_memory_tier_did_on_cpu(bert_ce: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--model", str(bert_ce), "--device", "cpu", "--memory-tier", "auto"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["memory_tier"]["tier"] == "auto" and "on cpu nothing was changed" in info["memory_tier"]["reason"]
    assert "gpu_memory" not in info  # gauges only on CUDA


# -- out of memory: split, lower the budget, count it --------------------------------------------------


class OomBackend:
    """A real backend that raises torch.OutOfMemoryError above ``max_rows`` rows or ``max_len`` tokens in a row."""

    def __init__(self, inner: Any, max_rows: int, max_len: int = 10**9) -> None:
        self.inner = inner
        self.max_rows = max_rows
        self.max_len = max_len
        self.raised = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def forward(self, sequences: Sequence[Encoded]) -> np.ndarray:
        if len(sequences) > self.max_rows or max(len(s) for s in sequences) > self.max_len:
            self.raised += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner.forward(sequences)


def oom_engine(model_dir: Path, max_rows: int, max_len: int = 10**9) -> Reranker:
    engine = Reranker.from_pretrained(str(model_dir), device="cpu", dtype="fp32", batch_tokens=100_000)
    engine.pipeline.backend = OomBackend(engine.backend, max_rows, max_len)
    return engine


def test_torch_oom_is_recognised() -> None:
    assert is_out_of_memory(torch.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_an_oom_splits_the_batch_and_lowers_the_budget_for_good(bert_ce: Path, sentences: list[str]) -> None:
    docs = sentences * 4
    reference = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="fp32").score(QUERY, docs)
    engine = oom_engine(bert_ce, max_rows=5)
    assert engine.score(QUERY, docs) == pytest.approx(reference, abs=1e-5)
    backend: OomBackend = engine.backend  # type: ignore[assignment]
    first = backend.raised
    assert first >= 1 and engine.pipeline.budget.backoffs == first
    assert engine.batch_limits.max_tokens < 100_000
    # The next call is planned under the lowered budget: fewer (or no) OOMs.
    assert engine.score(QUERY, docs) == pytest.approx(reference, abs=1e-5)
    assert backend.raised - first < first


def test_a_sequence_that_does_not_fit_alone_is_a_413_class_error_naming_it(bert_ce: Path) -> None:
    engine = oom_engine(bert_ce, max_rows=64, max_len=20)
    docs = ["short one.", "a much longer document " * 6, "another short one."]
    with pytest.raises(SequenceTooLargeError, match="sequence 1: a sequence of \\d+ tokens does not fit") as info:
        engine.score(QUERY, docs)
    assert isinstance(info.value, InputTooLargeError)


def _metric(url: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_the_server_backs_off_counts_it_and_fails_only_the_request_that_cannot_fit(bert_ce: Path,
                                                                                 sentences: list[str]) -> None:
    from live_server import LiveServer

    from rerankd.server import ServerSettings, create_app

    engine = oom_engine(bert_ce, max_rows=3, max_len=40)
    settings = ServerSettings(max_wait_ms=300, log_requests=False)
    with LiveServer(create_app({"m": engine}, settings)) as live:
        before = _metric(live.url, "rerankd_batch_token_budget", model="m")

        async def together() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=live.url, timeout=60) as c:
                bodies = [{"query": QUERY, "documents": sentences[:4]} for _ in range(3)]
                bodies.append({"query": QUERY, "documents": ["tiny.", "word " * 60]})
                return await asyncio.gather(*(c.post("/v1/rerank", json=b) for b in bodies))

        responses = asyncio.run(together())
        assert [r.status_code for r in responses[:3]] == [200, 200, 200]
        assert all(len(r.json()["results"]) == 4 for r in responses[:3])
        assert responses[3].status_code == 413 and "does not fit" in responses[3].json()["error"]["message"]
        assert _metric(live.url, "rerankd_oom_backoffs_total", model="m") >= 1
        assert _metric(live.url, "rerankd_batch_token_budget", model="m") < before
        ok = httpx.post(f"{live.url}/v1/rerank", json={"query": QUERY, "documents": sentences[:2]}, timeout=60)
        assert ok.status_code == 200
        assert _metric(live.url, "rerankd_gpu_memory_bytes") == 0  # no GPU gauges on a CPU


# -- packed attention: the dispatch, and the fallback's numbers --------------------------------------------


def test_packing_stays_off_on_cuda_unless_asked() -> None:
    assert packs_by_default("cpu", True) and not packs_by_default("cuda", True) and not packs_by_default("mps", True)


def test_the_varlen_kernel_is_chosen_only_on_cuda_in_half_precision() -> None:
    params = frozenset(VARLEN_POSITIONAL) | {"window_size", "scale", "enable_gqa"}
    assert attention_kernel("cuda", torch.bfloat16, params) == "varlen"
    assert attention_kernel("cuda", torch.float16, params) == "varlen"
    assert attention_kernel("cuda", torch.float32, params) == "sdpa"
    assert attention_kernel("cpu", torch.bfloat16, params) == "sdpa"
    assert attention_kernel("cuda", torch.bfloat16, None) == "sdpa"


def test_varlen_options_follow_the_signature_torch_has() -> None:
    older = frozenset(VARLEN_POSITIONAL) | {"is_causal", "return_aux"}
    newer = frozenset(VARLEN_POSITIONAL) | {"window_size", "scale", "enable_gqa", "return_aux"}
    assert varlen_options(older, causal=True, scaling=None, head_dim=64, groups=2) == {"is_causal": True}
    assert varlen_options(newer, causal=True, scaling=0.125, head_dim=64, groups=2) == {
        "window_size": (-1, 0), "scale": 0.125, "enable_gqa": True}
    assert varlen_options(newer, causal=False, scaling=None, head_dim=64, groups=1) == {}
    assert varlen_options(older, causal=False, scaling=64 ** -0.5, head_dim=64, groups=1) == {}
    assert varlen_options(older, causal=False, scaling=0.5, head_dim=64, groups=1) is None  # custom scale, no way to pass it
    bare = frozenset(VARLEN_POSITIONAL)
    assert varlen_options(bare, causal=True, scaling=None, head_dim=64, groups=1) is None


def test_a_varlen_signature_is_accepted_only_with_the_expected_positional_parameters() -> None:
    def good(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, window_size=(-1, -1)): ...  # type: ignore[no-untyped-def]

    def other(q, k, v, cu_seqlens, max_seqlen): ...  # type: ignore[no-untyped-def]

    assert parameters_if_callable(inspect.signature(good)) == frozenset(VARLEN_POSITIONAL) | {"window_size"}
    assert parameters_if_callable(inspect.signature(other)) is None
    found = varlen_parameters()  # this torch's own, whatever it is: None or a usable set
    assert found is None or set(VARLEN_POSITIONAL) <= found


class _Layer:
    def __init__(self, groups: int, causal: bool) -> None:
        self.num_key_value_groups = groups
        self.is_causal = causal
        self.layer_idx = 0


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_per_sequence_with_grouped_heads_equals_attention_of_each_sequence_alone(causal: bool) -> None:
    torch.manual_seed(0)
    lengths, heads, kv_heads, dim = [5, 1, 9, 3], 4, 2, 8
    bounds = [0]
    for n in lengths:
        bounds.append(bounds[-1] + n)
    q = torch.randn(1, heads, bounds[-1], dim)
    k = torch.randn(1, kv_heads, bounds[-1], dim)
    v = torch.randn(1, kv_heads, bounds[-1], dim)
    with packing(bounds):
        out, _ = packed_attention(_Layer(heads // kv_heads, causal), q, k, v, None, scaling=dim ** -0.5)
    assert out.shape == (1, bounds[-1], heads, dim)
    for a, b in zip(bounds[:-1], bounds[1:]):
        kk = k[:, :, a:b].repeat_interleave(heads // kv_heads, dim=1)
        vv = v[:, :, a:b].repeat_interleave(heads // kv_heads, dim=1)
        scores = (q[:, :, a:b] @ kk.transpose(-1, -2)) * dim ** -0.5
        if causal:
            scores = scores.masked_fill(torch.ones(b - a, b - a, dtype=torch.bool).triu(1), float("-inf"))
        expected = (scores.softmax(-1) @ vv).transpose(1, 2)
        assert torch.allclose(out[:, a:b], expected, atol=1e-5)
    direct = sdpa_per_sequence(q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1), bounds, causal, None)
    assert torch.allclose(direct, out, atol=1e-6)


def test_xlmr_packed_keeps_the_position_offset_and_matches_padded(xlmr_ce: Path, sentences: list[str]) -> None:
    family = load_family(xlmr_ce)
    padded = Reranker(family, TorchBackend(family, device="cpu", dtype="fp32", packed=False)).score(QUERY, sentences)
    packed_backend = TorchBackend(family, device="cpu", dtype="fp32", packed=True)
    assert packed_backend.module.offset == family.config["pad_token_id"] + 1
    assert packed_backend.describe()["attention"] == "sdpa"
    assert Reranker(family, packed_backend).score(QUERY, sentences) == pytest.approx(padded, abs=1e-5)


def test_model_size_for_the_tiers_is_read_from_the_safetensors_headers(bert_ce: Path) -> None:
    from safetensors.torch import load_file

    from rerankd.gpu_setup import count_parameters

    tensors = load_file(str(bert_ce / "model.safetensors"))
    assert count_parameters(bert_ce) == sum(t.numel() for t in tensors.values()) > 0
