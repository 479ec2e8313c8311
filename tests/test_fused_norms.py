"""Decoder RMSNorms as torch's fused kernel: outputs identical to transformers' layers, or no swap."""

from __future__ import annotations

import numpy as np
import pytest

from rerankd import Reranker

torch = pytest.importorskip("torch")
from rerankd.backends import fused_norms  # noqa: E402
from rerankd.backends.fused_norms import FusedRMSNorm, use_fused_rms_norm  # noqa: E402

QUERY = "What is the capital of France?"


def _inputs(shape: tuple[int, ...], dtype) -> object:  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(1)
    scales = torch.logspace(-4, 4, shape[0]).reshape(-1, *([1] * (len(shape) - 1)))
    return (torch.randn(shape, generator=generator) * scales).to(dtype)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("module_path", ["qwen3.modeling_qwen3.Qwen3RMSNorm", "qwen3_vl.modeling_qwen3_vl.Qwen3VLTextRMSNorm",
                                         "llama.modeling_llama.LlamaRMSNorm"])
def test_the_fused_norm_equals_the_transformers_layer_bit_for_bit(module_path: str, dtype: str) -> None:
    import importlib

    module_name, class_name = module_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(f"transformers.models.{module_name}"), class_name)
    norm = cls(64, eps=1e-6).to(getattr(torch, dtype))
    with torch.no_grad():
        norm.weight.copy_(torch.randn(64, generator=torch.Generator().manual_seed(2)))
    fused = FusedRMSNorm(norm)
    assert fused.weight is norm.weight  # shared, not copied
    for shape in [(9, 64), (6, 5, 64), (8, 3, 4, 64)]:  # hidden states, and per-head q/k norms
        x = _inputs(shape, getattr(torch, dtype))
        assert torch.equal(fused(x), norm(x)), shape


class _OnePlusWeightRMSNorm(torch.nn.Module):
    """Gemma's form under Llama's attribute names: the probe must tell it apart."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((size,), 0.5))
        self.variance_epsilon = 1e-6

    def forward(self, x):  # type: ignore[no-untyped-def]
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return (h * (1.0 + self.weight.float())).to(x.dtype)


def test_a_norm_written_another_way_is_left_alone() -> None:
    model = torch.nn.Sequential(_OnePlusWeightRMSNorm(32), torch.nn.LayerNorm(32))
    assert use_fused_rms_norm(model) == 0
    assert type(model[0]) is _OnePlusWeightRMSNorm and type(model[1]) is torch.nn.LayerNorm


@pytest.mark.parametrize("name,norms", [("qwen3_lm", 2 * 4 + 1), ("qwen3_vl", None)])
def test_decoders_score_identically_with_fused_norms(name: str, norms: int | None, request: pytest.FixtureRequest,
                                                     sentences: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(request.getfixturevalue(name))
    fused = Reranker.from_pretrained(path)
    count = fused.describe()["fused_rms_norms"]
    assert count == norms if norms is not None else count > 0
    assert any(isinstance(m, FusedRMSNorm) for m in fused.backend.module.modules())
    monkeypatch.setattr(fused_norms, "use_fused_rms_norm", lambda model: 0)
    plain = Reranker.from_pretrained(path)
    assert plain.describe()["fused_rms_norms"] == 0
    docs = sentences * 2
    np.testing.assert_array_equal(fused.score(QUERY, docs, raw=True), plain.score(QUERY, docs, raw=True))
