"""The CPU as rerankd sees it: oneDNN's instruction-set cap drops the flags above it, so the defaults follow."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rerankd import hardware
from rerankd.hardware import cap_flags

SAPPHIRE_RAPIDS = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
                             "avx512dq", "avx512cd", "avx512vbmi", "avx512ifma", "avx512_vnni", "avx512_bf16",
                             "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"})


@pytest.fixture
def fresh_cpu_info() -> Iterator[None]:
    hardware.cpu_info.cache_clear()
    yield
    hardware.cpu_info.cache_clear()


@pytest.mark.parametrize(("cap", "kept", "dropped"), [
    (None, SAPPHIRE_RAPIDS, frozenset()),
    ("ALL", SAPPHIRE_RAPIDS, frozenset()),
    ("AVX512_CORE_AMX", SAPPHIRE_RAPIDS, frozenset()),
    ("AVX512_CORE_FP16", {"avx512_fp16", "avx512_bf16"}, {"amx_tile", "amx_bf16", "amx_int8"}),
    ("AVX512_CORE_BF16", {"avx512_bf16", "avx512_vnni", "avx512f", "avx512vbmi", "avx_vnni"}, {"avx512_fp16", "amx_bf16"}),
    ("AVX512_CORE_VNNI", {"avx512_vnni", "avx512f"}, {"avx512_bf16", "amx_int8"}),
    ("AVX512_CORE", {"avx512f", "avx512bw", "avx2"}, {"avx512_vnni", "avx512_bf16"}),
    ("AVX2_VNNI", {"avx2", "fma", "avx_vnni"}, {"avx512f", "avx512vbmi", "avx512_bf16", "amx_bf16"}),
    ("AVX2", {"avx2", "fma", "f16c", "sse4_2"}, {"avx_vnni", "avx512f", "avx512ifma", "avx512_vnni", "amx_tile"}),
    ("SSE41", {"sse4_2", "avx"}, {"avx2", "fma", "avx512f"}),
])
def test_cap_keeps_its_level_and_those_below(cap: str | None, kept: set[str], dropped: set[str]) -> None:
    flags = cap_flags(SAPPHIRE_RAPIDS, cap)
    assert set(kept) <= flags
    assert not flags & set(dropped)


def test_unknown_cap_is_ignored_as_onednn_ignores_it() -> None:
    assert cap_flags(SAPPHIRE_RAPIDS, "AVX9000") == set(SAPPHIRE_RAPIDS)


def test_cap_is_read_from_either_variable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert hardware.isa_cap() is None
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "avx2")
    assert hardware.isa_cap() == "AVX2"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", " avx512_core_bf16 ")
    assert hardware.isa_cap() == "AVX512_CORE_BF16"


def test_capped_cpu_gets_the_older_class_defaults(monkeypatch: pytest.MonkeyPatch, fresh_cpu_info: None) -> None:
    """Under an AVX2 cap rerankd's choices see no AVX-512 and no AMX: fp32 by default, neither kernel, and
    ``rerankd info`` says the cap is why."""
    from rerankd.backends import cpu_attention, residual_fp32
    from rerankd.device import cpu_has_fast_bf16, default_dtype, explain_dtype

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    flags = hardware.cpu_info().flags
    assert not {f for f in flags if f.startswith(("avx512", "amx"))}
    assert not cpu_has_fast_bf16()
    assert default_dtype("cpu") == "float32"
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in explain_dtype("cpu", "float32", requested=False)
    assert not cpu_attention.NEEDED_FLAGS <= hardware.cpu_flags()
    assert not residual_fp32.NEEDED_FLAGS <= hardware.cpu_flags()
    assert not {"avx512f", "amx_bf16"} & set(hardware.machine_fingerprint()["features"])


def test_capped_fingerprint_differs_from_uncapped(monkeypatch: pytest.MonkeyPatch, fresh_cpu_info: None) -> None:
    """A tuning record measured under a cap must not be taken for one of the whole CPU's."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    whole = hardware.machine_fingerprint()
    if not {"avx512f", "amx_bf16", "avx512_bf16"} & set(whole["features"]):
        pytest.skip("this CPU has nothing above AVX2 to cap")
    hardware.cpu_info.cache_clear()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert hardware.machine_fingerprint() != whole


def test_parse_cpuinfo_counts_physical_cores_of_allowed_cpus() -> None:
    block = "processor\t: {n}\nmodel name\t: Test CPU\nphysical id\t: 0\ncore id\t: {core}\nflags\t\t: fpu avx2 fma\n"
    text = "\n".join(block.format(n=n, core=n // 2) for n in range(4))  # 2 cores, 2 SMT siblings each
    model, flags, cores = hardware._parse_cpuinfo(text, {0, 1, 2})
    assert model == "Test CPU" and flags == {"fpu", "avx2", "fma"} and cores == {("0", "0"), ("0", "1")}


def test_cgroup_quota_caps_usable_cores(monkeypatch: pytest.MonkeyPatch, fresh_cpu_info: None) -> None:
    monkeypatch.setattr(hardware, "cgroup_cpu_limit", lambda: 1.0)
    assert hardware.cpu_info().usable_cores == 1


def _cpu(monkeypatch: pytest.MonkeyPatch, flags: set[str]) -> None:
    real = hardware.cpu_info()
    monkeypatch.setattr(hardware, "cpu_info", lambda: hardware.CpuInfo(real.model, frozenset(flags), 2, 2))


def _speedup(monkeypatch: pytest.MonkeyPatch, value: float | None) -> None:
    from rerankd import gemm_rates

    def measured() -> gemm_rates.GemmRates:
        if value is None:
            pytest.fail("the GEMM rates were measured where the flags decide")
        return gemm_rates.GemmRates(fp32=100.0, bf16=100.0 * value)

    monkeypatch.setattr(gemm_rates, "measured_rates", measured)


@pytest.mark.parametrize(("flags", "speedup", "dtype"), [
    ({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, None, "bfloat16"),  # AMX: known to pay
    ({"avx2", "fma"}, None, "float32"),  # no bf16 units: torch emulates bf16 at under 1 GFLOP/s
    ({"avx2", "avx512f", "avx512_bf16"}, 1.8, "bfloat16"),  # AMD Zen 5's kind of AVX512-BF16
    ({"avx2", "avx512f", "avx512_bf16"}, 0.7, "float32"),  # an Intel core's, below AMX
    ({"avx2", "avx512f", "avx512_bf16"}, 1.29, "float32"),  # a near tie goes to the exact dtype
])
def test_cpu_default_dtype_follows_what_bf16_gains_here(monkeypatch: pytest.MonkeyPatch, flags: set[str],
                                                        speedup: float | None, dtype: str) -> None:
    from rerankd.device import default_dtype, explain_dtype

    _cpu(monkeypatch, flags)
    _speedup(monkeypatch, speedup)
    assert default_dtype("cpu") == dtype
    why = explain_dtype("cpu", dtype, requested=False)
    assert why.startswith(dtype)
    if speedup is not None:
        assert f"{speedup:.2f}×" in why and "GFLOP/s" in why


def test_gemm_probe_measures_both_dtypes_once() -> None:
    from rerankd import gemm_rates

    rates = gemm_rates.measured_rates()
    assert rates.fp32 > 0 and rates.bf16 > 0 and rates.speedup == rates.bf16 / rates.fp32
    assert gemm_rates.measured_rates() is rates


def test_gemm_probe_runs_on_one_thread_and_gives_the_count_back(torch_threads) -> None:  # type: ignore[no-untyped-def]
    import torch

    from rerankd import gemm_rates

    seen = []
    real = gemm_rates._rate
    torch.set_num_threads(2)
    try:
        gemm_rates._rate = lambda dtype: seen.append(torch.get_num_threads()) or real(dtype)  # type: ignore[assignment]
        gemm_rates.measured_rates.__wrapped__()
    finally:
        gemm_rates._rate = real  # type: ignore[assignment]
    assert seen == [1, 1]
    assert torch.get_num_threads() == 2
