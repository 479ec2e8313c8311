"""bf16 encoders keep their residual stream fp32 (backends/residual_fp32.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rerankd import Reranker
from rerankd.backends.onednn_linear import OneDnnLinear, in_dtype, onednn_linear_supported
from rerankd.backends import residual_fp32
from rerankd.backends.residual_fp32 import Fp32LayerNorm, keep_residual_fp32
from rerankd.backends.torch_backend import TorchBackend

QUERY = "Which city is the capital of France?"
needs_bf16 = pytest.mark.skipif(not onednn_linear_supported(torch.bfloat16), reason="oneDNN does not run bf16 on this CPU")


def _scores(engine: Reranker, docs: list[str]) -> np.ndarray:
    return np.asarray(engine.score(QUERY, docs, raw=True))


def test_fp32_layer_norm_is_layer_norm_in_fp32() -> None:
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(24)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(5, 24).to(torch.bfloat16)
    expected = norm(x.float())
    out = Fp32LayerNorm(norm.to(torch.bfloat16))(x)
    assert out.dtype == torch.float32
    # the weights went through bf16 once; the computation itself is fp32
    torch.testing.assert_close(out, torch.nn.functional.layer_norm(x.float(), (24,), norm.weight.float(), norm.bias.float()))
    assert (out - expected).abs().max() < 0.05


@needs_bf16
@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("name", ["bert_ce_wide", "xlmr_ce", "electra_ce"])
def test_bf16_encoder_with_fp32_residual_is_closer_to_fp32(name: str, packed: bool, request: pytest.FixtureRequest,
                                                           sentences: list[str]) -> None:
    model = request.getfixturevalue(name)
    docs = sentences * 3
    reference = _scores(Reranker.from_pretrained(str(model), dtype="fp32"), docs)
    engine = Reranker.from_pretrained(str(model), dtype="bf16", packed=packed)
    layers = engine.family.config["num_hidden_layers"]
    # the embeddings' norm and two per layer: every norm the residual stream passes through
    assert engine.describe()["fp32_residual_norms"] == 1 + 2 * layers
    plain = Reranker(engine.family, TorchBackend(engine.family, device="cpu", dtype="bf16", packed=packed,
                                                 fp32_residual=False))
    assert "fp32_residual_norms" not in plain.describe()
    kept, rounded = np.abs(_scores(engine, docs) - reference), np.abs(_scores(plain, docs) - reference)
    # measured here: mean |Δ| 0.12 vs 0.19 (BERT), 0.015 vs 0.022 (XLM-R), 0.020 vs 0.026 (ELECTRA); the
    # rest is the matrix products' own bf16 rounding
    assert kept.mean() < 0.9 * rounded.mean()
    assert kept.max() <= rounded.max()


@needs_bf16
def test_decoders_and_fp32_models_keep_their_norms(qwen3_lm: Path, bert_ce: Path) -> None:
    # Qwen3 is pre-LN (RMSNorm beside the residual): nothing to keep
    assert "fp32_residual_norms" not in Reranker.from_pretrained(str(qwen3_lm), dtype="bf16").describe()
    assert "fp32_residual_norms" not in Reranker.from_pretrained(str(bert_ce), dtype="fp32").describe()


@needs_bf16
def test_plain_bf16_linear_layers_are_left_alone(bert_ce: Path, sentences: list[str]) -> None:
    # without oneDNN layers a bf16 nn.Linear would refuse the fp32 stream: nothing is changed
    engine = Reranker.from_pretrained(str(bert_ce), dtype="fp32")
    plain = TorchBackend(engine.family, device="cpu", dtype="bf16", onednn=False)
    assert keep_residual_fp32(plain.module) == 0
    assert np.isfinite(Reranker(engine.family, plain).score(QUERY, sentences)).all()


@needs_bf16
def test_one_conversion_per_tensor() -> None:
    a, b = torch.randn(4, 8), torch.randn(4, 8)
    first = in_dtype(a, torch.bfloat16)
    assert in_dtype(a, torch.bfloat16) is first  # the query, key and value projections share it
    other = in_dtype(b, torch.bfloat16)
    assert other is not first and torch.equal(other, b.to(torch.bfloat16))
    assert in_dtype(other, torch.bfloat16) is other
    layer = OneDnnLinear(torch.nn.Linear(8, 3).to(torch.bfloat16))
    torch.testing.assert_close(layer(a), layer(a.to(torch.bfloat16)))


needs_norm_kernel = pytest.mark.skipif(not residual_fp32.NEEDED_FLAGS <= residual_fp32.cpu_flags(),
                                       reason="this CPU has no AVX512-BF16: the norm kernel is never built here")


@pytest.fixture
def fresh_norm_kernel():  # type: ignore[no-untyped-def]
    residual_fp32.norm_kernel.cache_clear()
    yield
    residual_fp32.norm_kernel.cache_clear()


@needs_norm_kernel
@pytest.mark.parametrize("cols", [32, 1024, 1000])
@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("with_residual", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_norm_kernel_is_torch_layer_norm_of_the_sum(cols: int, x_dtype: torch.dtype, with_residual: bool,
                                                     affine: bool) -> None:
    function = residual_fp32.norm_kernel().function
    assert function is not None, residual_fp32.norm_kernel().reason
    generator = torch.Generator().manual_seed(cols)
    x = (3 * torch.randn(37, cols, generator=generator) - 1).to(x_dtype)
    residual = 5 * torch.randn(37, cols, generator=generator) if with_residual else None
    weight, bias = (torch.randn(cols, generator=generator), torch.randn(cols, generator=generator)) if affine else (None, None)
    out = residual_fp32._run(function, x, residual, weight, bias, 1e-12, 2)
    total = x.float() if residual is None else x.float() + residual
    torch.testing.assert_close(out, torch.nn.functional.layer_norm(total, (cols,), weight, bias, 1e-12), atol=2e-5, rtol=1e-5)
    # its bf16 copy is the fp32 output rounded, and the next layer takes it instead of converting
    converted = in_dtype(out, torch.bfloat16)
    assert torch.equal(converted, out.to(torch.bfloat16))


@needs_bf16
@needs_norm_kernel
def test_encoder_scores_the_same_with_and_without_the_norm_kernel(xlmr_ce: Path, sentences: list[str],
                                                                   monkeypatch, fresh_norm_kernel) -> None:  # type: ignore[no-untyped-def]
    engine = Reranker.from_pretrained(str(xlmr_ce), dtype="bf16")
    assert engine.describe()["fp32_residual_norm_kernel"].startswith("rerankd AVX512-BF16 kernel")
    # every sublayer's end hands its residual to the norm (so the kernel adds as it normalizes)
    outputs = [m for m in engine.backend.module.modules() if type(m).__name__.endswith("Output") and hasattr(m, "dense")]
    assert len(outputs) == 2 * engine.family.config["num_hidden_layers"]
    assert all(m.forward.__func__ is residual_fp32._dense_add_norm for m in outputs)
    with_kernel = _scores(engine, sentences * 2)
    residual_fp32.norm_kernel.cache_clear()
    monkeypatch.setenv(residual_fp32.ENV, "torch")
    assert residual_fp32.norm_kernel().function is None and "RERANKD_CPU_NORM=torch" in residual_fp32.norm_kernel().reason
    # the kernel's fp32 sums round differently from torch's in the last bits, which a bf16 product can
    # carry into a last bf16 bit of its own
    np.testing.assert_allclose(with_kernel, _scores(engine, sentences * 2), atol=1e-2)


def test_norm_kernel_says_why_without_avx512_bf16(monkeypatch, fresh_norm_kernel) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(residual_fp32, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    state = residual_fp32.norm_kernel()
    assert state.function is None and "avx512_bf16" in state.reason
    norm = Fp32LayerNorm(torch.nn.LayerNorm(16))
    x, residual = torch.randn(3, 16).to(torch.bfloat16), torch.randn(3, 16)
    torch.testing.assert_close(norm(x, residual), torch.nn.functional.layer_norm(x.float() + residual, (16,)))


@needs_bf16
def test_the_fp32_residual_is_part_of_the_fingerprint(bert_ce: Path) -> None:
    engine = Reranker.from_pretrained(str(bert_ce), dtype="bf16")
    plain = Reranker(engine.family, TorchBackend(engine.family, device="cpu", dtype="bf16", fp32_residual=False))
    assert engine.fingerprint()["residual"] == "fp32"
    assert "residual" not in plain.fingerprint()  # plain bf16 keeps the keys it always had
