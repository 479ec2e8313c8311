"""Device and precision choice: where a model runs and in which dtype, by default and on request."""

from __future__ import annotations

from typing import Any

from rerankd.errors import InputError

DTYPES = ("float32", "bfloat16", "float16")
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}


def normalize_dtype(name: str | None) -> str | None:
    """'bf16' → 'bfloat16' etc.; None or 'auto' → None (pick per device)."""
    if name is None or str(name).lower() == "auto":
        return None
    key = str(name).lower().replace("torch.", "")
    key = _DTYPE_ALIASES.get(key, key)
    if key not in DTYPES:
        raise InputError(f"unknown dtype {name!r}; use one of auto, fp32, bf16, fp16")
    return key


#: bf16 is the CPU default without AMX only where its products measure at least this much faster
#: than fp32: the bf16 path also converts activations and rounds, so a tie goes to the exact dtype.
BF16_WORTH_IT = 1.3


def cpu_has_fast_bf16() -> bool:
    """True where bf16 pays on this CPU: AMX-BF16, or AVX512-BF16 whose bf16 products measure at least
    :data:`BF16_WORTH_IT` × the fp32 rate (:mod:`rerankd.gemm_rates`; vendors differ, see there)."""
    from rerankd.hardware import cpu_info

    flags = cpu_info().flags
    if not probe_decides_bf16(flags):
        return "amx_bf16" in flags
    from rerankd.gemm_rates import bf16_speedup

    return bf16_speedup() >= BF16_WORTH_IT


def probe_decides_bf16(flags: frozenset[str]) -> bool:
    """Where the flags alone cannot say whether bf16 pays: AVX512-BF16 without AMX."""
    return "avx512_bf16" in flags and "amx_bf16" not in flags


def resolve_device(device: str | None) -> str:
    """'auto' → cuda if available, else mps, else cpu; explicit names are checked."""
    import torch

    name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        build = "this torch is a CPU-only build" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise InputError(f"device {device!r} was asked for but CUDA is not available here ({build}); use --device cpu")
    if name.startswith("cuda:"):
        index = name.partition(":")[2]
        if not index.isdigit():
            raise InputError(f"unknown device {device!r}; use cuda or cuda:N with N a GPU index")
        if int(index) >= torch.cuda.device_count():
            raise InputError(f"device {device!r} was asked for but this machine has {torch.cuda.device_count()} CUDA "
                             f"GPU(s), numbered from 0")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("device 'mps' was asked for but Apple MPS is not available here; use --device cpu")
    if not (name == "cpu" or name == "mps" or name.startswith("cuda")):
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    return name


def default_dtype(device: str) -> str:
    """bf16 where the hardware runs it fast, fp16 on MPS, fp32 otherwise.

    On CUDA: bf16 where ``torch.cuda.is_bf16_supported()`` (Ampere and later), else fp16. fp16 on
    Qwen-family models can overflow to NaN (rerankd refuses non-finite scores); bf16 cannot, and
    the score head runs in fp32 either way (``torch_modules.keep_head_fp32``)."""
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "mps":
        return "float16"
    return "bfloat16" if cpu_has_fast_bf16() else "float32"


def explain_dtype(device: str, dtype: str, requested: bool) -> str:
    """Why a backend computes in ``dtype`` here, for ``rerankd info``."""
    if requested:
        return f"{dtype}: asked for"
    if device.startswith("cuda"):
        return f"{dtype}: the default on CUDA ({'bf16 supported' if dtype == 'bfloat16' else 'no bf16 on this GPU'})"
    if device == "mps":
        return "float16: the default on Apple MPS"
    from rerankd.hardware import cpu_info, isa_cap

    flags = cpu_info().flags
    native = sorted({"amx_bf16", "avx512_bf16"} & flags)
    capped = f", instruction set capped at ONEDNN_MAX_CPU_ISA={isa_cap()}" if isa_cap() else ""
    measured = ""
    if probe_decides_bf16(flags):
        from rerankd.gemm_rates import measured_rates

        rates = measured_rates()
        measured = (f"; measured bf16 {rates.bf16:.0f} against fp32 {rates.fp32:.0f} GFLOP/s ({rates.speedup:.2f}×, "
                    f"bf16 needs {BF16_WORTH_IT}×)")
    if dtype == "bfloat16":
        return (f"bfloat16: this CPU multiplies bf16 natively ({', '.join(native)}{capped}{measured}); within the "
                "accuracy bound")
    if measured:
        return (f"float32: this CPU has AVX512-BF16 but no AMX{capped}; its bf16 products are not fast enough to "
                f"pay for bf16's conversions and rounding{measured}")
    return (f"float32: this CPU has no native bf16 (no AMX-BF16 or AVX512-BF16{capped}), where torch's bf16 "
            "matmul is emulated and far slower than fp32")


def torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def default_batch_tokens(device: str) -> int:
    """Tokens per forward pass: small on CPU (a batch's activations stay in cache), large on
    accelerators (parallelism). ``benchmarks/rerank100.py --batch-tokens`` measures other budgets."""
    return 4096 if device == "cpu" else 32768

