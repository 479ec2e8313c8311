"""oneDNN linear layers (weights reordered once, activation fused): same scores as plain nn.Linear."""

from __future__ import annotations

import numpy as np
import pytest

from rerankd import Reranker

torch = pytest.importorskip("torch")
from rerankd.backends.onednn_linear import OneDnnLinear, onednn_linear_supported, use_onednn_linear  # noqa: E402
from rerankd.backends.torch_backend import TorchBackend  # noqa: E402

pytestmark = pytest.mark.skipif(not onednn_linear_supported(torch.float32), reason="this torch build has no oneDNN linear ops")

QUERY = "What is the capital of France?"
FAMILIES = ["bert_ce", "xlmr_ce", "qwen3_lm", "bi_encoder"]


def _plain_linear_count(family) -> int:  # type: ignore[no-untyped-def]
    backend = TorchBackend(family, device="cpu", dtype="fp32", onednn=False)
    return sum(type(m) is torch.nn.Linear for m in backend.module.modules())


@pytest.mark.parametrize("name", FAMILIES)
def test_onednn_layers_score_like_plain_layers(name: str, request: pytest.FixtureRequest, sentences: list[str]) -> None:
    engine = Reranker.from_pretrained(str(request.getfixturevalue(name)), dtype="fp32")
    info = engine.describe()
    # Every linear layer moved; one activation fused per transformer layer (the tiny models have 2).
    assert info["onednn_linear_layers"] == _plain_linear_count(engine.family) > 0
    assert info["onednn_fused_activations"] == 2
    assert not any(type(m) is torch.nn.Linear for m in engine.backend.module.modules())
    plain = Reranker(engine.family, TorchBackend(engine.family, device="cpu", dtype="fp32", onednn=False))
    assert plain.describe()["onednn_linear_layers"] == 0
    np.testing.assert_allclose(engine.score(QUERY, sentences * 2, raw=True), plain.score(QUERY, sentences * 2, raw=True), atol=1e-5)


@pytest.mark.skipif(not onednn_linear_supported(torch.bfloat16), reason="oneDNN does not run bf16 on this CPU")
def test_bf16_onednn_layers_are_as_close_to_fp32_as_plain_bf16(bert_ce, sentences: list[str]) -> None:  # type: ignore[no-untyped-def]
    reference = np.asarray(Reranker.from_pretrained(str(bert_ce), dtype="fp32").score(QUERY, sentences * 3, raw=True))
    engine = Reranker.from_pretrained(str(bert_ce), dtype="bf16")
    assert engine.describe()["onednn_linear_layers"] > 0
    plain = Reranker(engine.family, TorchBackend(engine.family, device="cpu", dtype="bf16", onednn=False))
    onednn_error = np.abs(np.asarray(engine.score(QUERY, sentences * 3, raw=True)) - reference).mean()
    plain_error = np.abs(np.asarray(plain.score(QUERY, sentences * 3, raw=True)) - reference).mean()
    # Both round to bf16 in different places (measured 0.025 vs 0.023 here); a broken layer is far off.
    assert onednn_error <= 1.5 * plain_error + 1e-3


class _Intermediate(torch.nn.Module):
    """The shape of a BERT FFN input half: a linear layer, then the configured activation."""

    def __init__(self, hidden_act: str) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        self.dense = torch.nn.Linear(16, 48)
        self.intermediate_act_fn = ACT2FN[hidden_act]

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.intermediate_act_fn(self.dense(x))


class _GatedMLP(torch.nn.Module):
    """The shape of a Qwen / Llama MLP: down(act(gate(x)) * up(x))."""

    def __init__(self) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        self.gate_proj = torch.nn.Linear(16, 48, bias=False)
        self.up_proj = torch.nn.Linear(16, 48, bias=False)
        self.down_proj = torch.nn.Linear(48, 16, bias=False)
        self.act_fn = ACT2FN["silu"]

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def _converted(module, x):  # type: ignore[no-untyped-def]
    """(output before, output after, report) of converting ``module`` to oneDNN layers in place."""
    with torch.inference_mode():
        expected = module(x)
        report = use_onednn_linear(module)
        return expected, module(x), report


@pytest.mark.parametrize(("hidden_act", "fused"), [("gelu", True), ("gelu_new", True), ("gelu_pytorch_tanh", True),
                                                   ("relu", True), ("silu", True), ("quick_gelu", False)])
def test_each_activation_is_fused_as_exactly_itself(hidden_act: str, fused: bool) -> None:
    # erf GELU and tanh GELU differ by ~1e-3 on these inputs: a wrong post-op fails the 1e-5 bound.
    torch.manual_seed(0)
    module = _Intermediate(hidden_act).eval()
    x = 3 * torch.randn(2, 7, 16)
    expected, got, report = _converted(module, x)
    assert isinstance(module.dense, OneDnnLinear) and report.layers == 1
    assert report.fused_activations == int(fused)
    assert isinstance(module.intermediate_act_fn, torch.nn.Identity) == fused
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_gated_mlp_fuses_the_gate_activation_only() -> None:
    torch.manual_seed(0)
    module = _GatedMLP().eval()
    x = 3 * torch.randn(5, 16)
    expected, got, report = _converted(module, x)
    assert (report.layers, report.fused_activations) == (3, 1)
    assert module.gate_proj.post_op[0] == "swish" and module.up_proj.post_op[0] == "none"
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_a_patch_embedding_convolution_runs_as_one_linear_layer(dtype, tol: float) -> None:  # type: ignore[no-untyped-def]
    """Qwen3-VL's patch embedding: Conv3d(3, E, kernel=stride=(2, 16, 16)) over (rows, 3, 2, 16, 16) views."""
    from rerankd.backends.onednn_linear import PatchLinear

    if not onednn_linear_supported(dtype):
        pytest.skip(f"oneDNN does not run {dtype} linear layers here")
    torch.manual_seed(0)
    holder = torch.nn.Module()
    holder.proj = torch.nn.Conv3d(3, 32, kernel_size=(2, 16, 16), stride=(2, 16, 16)).to(dtype).eval()
    other = torch.nn.Conv3d(3, 8, kernel_size=3).to(dtype)  # not a patch cutter: left alone
    holder.other = other
    patches = torch.randn(7, 3, 2, 16, 16, dtype=dtype)
    image = torch.randn(1, 3, 2, 32, 48, dtype=dtype)  # several patches in one input: the convolution runs
    with torch.inference_mode():
        expected, expected_image = holder.proj(patches), holder.proj(image)
        use_onednn_linear(holder)
        got, got_image = holder.proj(patches), holder.proj(image)
    assert isinstance(holder.proj, PatchLinear) and holder.other is other
    assert got.shape == expected.shape == (7, 32, 1, 1, 1)
    torch.testing.assert_close(got.float(), expected.float(), atol=tol, rtol=tol)
    torch.testing.assert_close(got_image, expected_image, atol=0, rtol=0)


def test_without_onednn_the_backend_keeps_plain_layers(bert_ce, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from rerankd.backends import onednn_linear

    monkeypatch.setattr(onednn_linear, "onednn_linear_supported", lambda dtype: False)
    engine = Reranker.from_pretrained(str(bert_ce), dtype="fp32")
    assert engine.describe()["onednn_linear_layers"] == 0
    assert any(type(m) is torch.nn.Linear for m in engine.backend.module.modules())


def test_torch_int8_runs_its_fp32_layers_on_onednn(bert_ce, sentences: list[str], monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from rerankd.backends import onednn_linear

    engine = Reranker.from_pretrained(str(bert_ce), backend="torch-int8")
    left_fp32 = [name for name, m in engine.backend.module.named_modules() if isinstance(m, OneDnnLinear)]
    # The FFN down-projections (one per layer) are the layers int8 leaves in fp32, for quality.
    assert engine.describe()["onednn_linear_layers"] == len(left_fp32) == 2
    assert all(name.endswith("output.dense") and ".attention." not in name for name in left_fp32)
    monkeypatch.setattr(onednn_linear, "onednn_linear_supported", lambda dtype: False)
    plain = Reranker.from_pretrained(str(bert_ce), backend="torch-int8")
    assert plain.describe()["onednn_linear_layers"] == 0
    np.testing.assert_allclose(engine.score(QUERY, sentences, raw=True), plain.score(QUERY, sentences, raw=True), atol=1e-3)


def test_the_vision_patch_merger_fuses_its_gelu() -> None:
    # Qwen3-VL's merger (main and deepstack) is linear_fc2(act_fn(linear_fc1(x))) in a class named
    # *PatchMerger, not *MLP: its erf GELU was a separate pass before.
    from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLVisionConfig
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionPatchMerger

    torch.manual_seed(0)
    config = Qwen3VLVisionConfig(hidden_size=16, out_hidden_size=24, spatial_merge_size=2)
    module = Qwen3VLVisionPatchMerger(config).eval()
    x = 3 * torch.randn(8, 16)
    expected, got, report = _converted(module, x)
    assert (report.layers, report.fused_activations) == (2, 1)
    assert module.linear_fc1.post_op == ("gelu", "none") and isinstance(module.act_fn, torch.nn.Identity)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_each_plain_weight_is_freed_as_its_layer_is_replaced(bert_ce) -> None:  # type: ignore[no-untyped-def]
    """No reference to a replaced nn.Linear outlives its replacement (with the garbage collector off):
    otherwise every plain weight stays beside its reordered copy until the end (+0.55 GB at an fp32
    XLM-R large load's peak)."""
    import gc
    import weakref

    import torch

    from rerankd.backends import onednn_linear
    from rerankd.backends.weights import load_pretrained

    model = load_pretrained("sequence-classification", bert_ce, dtype=torch.float32)
    plain = [weakref.ref(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    alive_at_replacement = []
    real = onednn_linear.OneDnnLinear.__init__

    def spy(self, linear, *args):  # type: ignore[no-untyped-def]
        alive_at_replacement.append(sum(w() is not None for w in plain))
        real(self, linear, *args)

    gc.disable()
    try:
        onednn_linear.OneDnnLinear.__init__ = spy  # type: ignore[method-assign]
        report = use_onednn_linear(model)
    finally:
        onednn_linear.OneDnnLinear.__init__ = real  # type: ignore[method-assign]
        gc.enable()
    assert report.layers > 0
    # The i-th replacement sees the plain weights of layers not yet replaced (and its own), nothing more.
    assert alive_at_replacement == [len(plain) - i for i in range(len(alive_at_replacement))]
