"""rerankd's AMX attention kernel (backends/cpu_attention.py) against torch's SDPA, and its fallbacks."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from rerankd.backends import cpu_attention  # noqa: E402
from rerankd.backends.packed import sdpa_per_sequence  # noqa: E402

F = torch.nn.functional
LENGTHS = [1, 15, 16, 17, 31, 32, 33, 140, 517]  # around the kernel's 16-key and 32-key blocks


def _kernel_or_skip() -> None:
    if cpu_attention.status().function is None:
        pytest.skip(f"rerankd's attention kernel does not run here: {cpu_attention.status().reason}")


def _packed_qkv(lengths: list[int], heads: int, head_dim: int, dtype=torch.bfloat16, seed: int = 0):  # type: ignore[no-untyped-def]
    """Strided (1, heads, T, d) views of one (1, T, 3, heads, d) tensor, as a fused QKV layer makes them."""
    generator = torch.Generator().manual_seed(seed)
    bounds = [0]
    for n in lengths:
        bounds.append(bounds[-1] + n)
    qkv = (torch.randn(1, bounds[-1], 3, heads, head_dim, generator=generator) * 2).to(dtype)
    query, key, value = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    return query, key, value, bounds


def _torch_reference(query, key, value, bounds, dtype, **options):  # type: ignore[no-untyped-def]
    prefix = options.pop("prefix", None)
    prefix = None if prefix is None else tuple(t.to(dtype) for t in prefix)
    return cpu_attention.reference(query.to(dtype), key.to(dtype), value.to(dtype), bounds, prefix=prefix, **options)


def _assert_close_as_torch(got, query, key, value, bounds, **options) -> None:  # type: ignore[no-untyped-def]
    torch_bf16 = _torch_reference(query, key, value, bounds, torch.bfloat16, **options)
    exact = _torch_reference(query, key, value, bounds, torch.float32, **options)
    assert got.shape == torch_bf16.shape and got.dtype == torch.bfloat16
    assert (got.float() - torch_bf16.float()).abs().max() <= 0.07  # a few bf16 ulps at |x| ~ 2-4
    # As close to the fp32 computation as torch's own bf16 kernel is.
    ours, theirs = (got.float() - exact).abs().mean(), (torch_bf16.float() - exact).abs().mean()
    assert ours <= 1.2 * theirs


@pytest.mark.parametrize("head_dim", cpu_attention.HEAD_DIMS)
@pytest.mark.parametrize("causal", [False, True])
def test_kernel_matches_torch_sdpa_per_sequence(head_dim: int, causal: bool) -> None:
    _kernel_or_skip()
    query, key, value, bounds = _packed_qkv(LENGTHS, 3, head_dim)
    got = cpu_attention.attention(query, key, value, bounds, None, causal=causal)
    _assert_close_as_torch(got, query, key, value, bounds, causal=causal)


@pytest.mark.parametrize("head_dim", [64, 128])
def test_grouped_heads_after_a_shared_prefix_match_torch(head_dim: int) -> None:
    # A decoder's documents after a shared prompt: each sees the whole prefix, then its own past.
    _kernel_or_skip()
    query, key, value, bounds = _packed_qkv(LENGTHS, 4, head_dim, seed=5)
    prefix_q, prefix_k, prefix_v, _ = _packed_qkv([45], 2, head_dim, seed=6)
    kv = (key[:, :2].contiguous(), value[:, :2].contiguous())  # 2 key heads for 4 query heads
    got = cpu_attention.attention(query, *kv, bounds, 0.1, causal=True, prefix=(prefix_k, prefix_v))
    _assert_close_as_torch(got, query, *kv, bounds, scaling=0.1, causal=True, prefix=(prefix_k, prefix_v))


def test_first_rows_are_the_full_computation_s_first_rows_exactly() -> None:
    _kernel_or_skip()
    query, key, value, bounds = _packed_qkv(LENGTHS, 2, 32, seed=1)
    full = cpu_attention.attention(query, key, value, bounds, 0.3)
    firsts = query[:, :, bounds[:-1]]
    rows = cpu_attention.attention(firsts, key, value, bounds, 0.3, query_bounds=list(range(len(bounds))))
    assert torch.equal(rows[0], full[0, bounds[:-1]])


def test_same_output_on_one_thread_and_on_all() -> None:
    _kernel_or_skip()
    query, key, value, bounds = _packed_qkv(LENGTHS * 4, 4, 64, seed=2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cpu_attention.attention(query, key, value, bounds, None)
        torch.set_num_threads(max(2, before))
        many = cpu_attention.attention(query, key, value, bounds, None)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, many)


def test_onednn_bf16_layers_around_the_kernel_are_unchanged() -> None:
    # The kernel configures AMX tiles on torch's threads and releases them; oneDNN's AMX matrix
    # products before and after must give the same bits as without it.
    _kernel_or_skip()
    from rerankd.backends.onednn_linear import OneDnnLinear

    generator = torch.Generator().manual_seed(3)
    layer = OneDnnLinear(torch.nn.Linear(384, 1536).to(torch.bfloat16))
    x = torch.randn(700, 384, generator=generator).to(torch.bfloat16)
    with torch.inference_mode():
        expected = layer(x)
        query, key, value, bounds = _packed_qkv(LENGTHS, 12, 32, seed=4)
        for _ in range(3):
            cpu_attention.attention(query, key, value, bounds, None)
            assert torch.equal(layer(x), expected)


def test_sdpa_per_sequence_uses_the_kernel_only_where_it_applies() -> None:
    _kernel_or_skip()
    query, key, value, bounds = _packed_qkv([20, 40], 2, 32)
    assert cpu_attention.usable(query, key)
    assert cpu_attention.usable(query, key[:, :1])  # grouped-query heads
    assert not cpu_attention.usable(query.float(), key.float())
    assert not cpu_attention.usable(query[..., :16], key[..., :16])  # head_dim 16
    with cpu_attention.torch_sdpa_only():
        assert not cpu_attention.usable(query, key)
        plain = sdpa_per_sequence(query, key, value, bounds, False, None)
    assert torch.equal(plain, _torch_reference(query, key, value, bounds, torch.bfloat16))
    assert torch.equal(sdpa_per_sequence(query, key, value, bounds, False, None),
                       cpu_attention.attention(query, key, value, bounds, None))


def test_packed_bf16_cross_encoder_runs_every_layer_on_the_kernel(bert_ce_wide: Path, sentences: list[str],
                                                                    monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _kernel_or_skip()
    from rerankd import Reranker
    from rerankd.backends.torch_backend import TorchBackend
    from rerankd.families import load_family

    family = load_family(bert_ce_wide)
    backend = TorchBackend(family, device="cpu", dtype="bf16", packed=True)
    assert backend.describe()["attention"] == "amx"
    assert backend.describe()["cpu_attention"] == cpu_attention.status().reason
    calls = []
    real = cpu_attention.attention
    monkeypatch.setattr(cpu_attention, "attention", lambda *a, **k: calls.append(a[5] if len(a) > 5 else None) or real(*a, **k))
    reranker = Reranker(family, backend)
    query = "which cells drive inflammation in the kidney"
    with_kernel = reranker.score(query, sentences)
    assert len(calls) == family.config["num_hidden_layers"]  # one call per layer for the whole batch
    assert calls[-1] is not None and calls[0] is None  # query bounds in the last layer: first rows only
    with cpu_attention.torch_sdpa_only():
        with_torch = reranker.score(query, sentences)
    assert len(calls) == family.config["num_hidden_layers"]
    # A random 2-layer model in bf16 moves scores by up to ~0.2 from fp32 whichever kernel runs
    # (see the kernel-level tests for the exact comparison); here the two bf16 paths stay close.
    assert with_kernel == pytest.approx(with_torch, abs=0.05)


def test_packed_bf16_decoder_with_a_shared_prefix_runs_on_the_kernel(qwen3_lm_wide: Path, sentences: list[str],
                                                                       monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _kernel_or_skip()
    from rerankd import Reranker
    from rerankd.backends import packed
    from rerankd.backends.torch_backend import TorchBackend
    from rerankd.families import load_family

    family = load_family(qwen3_lm_wide)
    reranker = Reranker(family, TorchBackend(family, device="cpu", dtype="bf16", packed=True))
    calls = []
    real = cpu_attention.attention
    monkeypatch.setattr(cpu_attention, "attention",
                        lambda *a, **k: calls.append((k["causal"], k.get("prefix") is not None)) or real(*a, **k))
    query = "which cells drive inflammation in the kidney"
    with_kernel = reranker.score(query, sentences, raw=True)
    layers = family.config["num_hidden_layers"]
    # the prefix recorded once, then every document after it: causal throughout
    assert calls == [(True, False)] * layers + [(True, True)] * layers
    with cpu_attention.torch_sdpa_only():
        with_torch = reranker.score(query, sentences, raw=True)
    monkeypatch.setattr(packed, "MIN_SHARED_PREFIX", 10**9)  # no shared prefix: one causal pass
    calls.clear()
    without_prefix = reranker.score(query, sentences, raw=True)
    assert calls == [(True, False)] * layers
    assert with_kernel == pytest.approx(with_torch, abs=0.1)  # raw yes-no logits of a random bf16 model
    assert with_kernel == pytest.approx(without_prefix, abs=0.1)
    fp32 = Reranker(family, TorchBackend(family, device="cpu", dtype="fp32", packed=True)).score(query, sentences, raw=True)
    error = sum(abs(a - b) for a, b in zip(with_kernel, fp32)) / len(fp32)
    assert error <= 1.5 * sum(abs(a - b) for a, b in zip(with_torch, fp32)) / len(fp32) + 0.01


@pytest.fixture
def fresh_status():  # type: ignore[no-untyped-def]
    cpu_attention.status.cache_clear()
    yield
    cpu_attention.status.cache_clear()


def test_turned_off_by_the_environment(monkeypatch, fresh_status) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(cpu_attention.ENV, "sdpa")
    state = cpu_attention.status()
    assert state.function is None and f"{cpu_attention.ENV}=sdpa" in state.reason
    query, key, _, _ = _packed_qkv([20], 2, 32)
    assert not cpu_attention.usable(query, key)


def test_a_compiler_that_fails_leaves_torch_attention_and_says_why(monkeypatch, tmp_path, fresh_status) -> None:  # type: ignore[no-untyped-def]
    if not cpu_attention.NEEDED_FLAGS <= cpu_attention.cpu_flags():
        pytest.skip("this CPU has no AMX-BF16: the kernel is never built here")
    monkeypatch.setenv("RERANKD_CACHE", str(tmp_path))  # no kernel built before
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    state = cpu_attention.status()
    assert state.function is None and "building rerankd's attention kernel failed" in state.reason


def test_without_amx_the_reason_names_the_missing_flags(monkeypatch, fresh_status) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(cpu_attention, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    state = cpu_attention.status()
    assert state.function is None and "amx_bf16" in state.reason
