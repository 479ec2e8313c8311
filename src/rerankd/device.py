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


def cpu_has_fast_bf16() -> bool:
    """True where the CPU multiplies bf16 natively (AMX-BF16 or AVX512-BF16)."""
    from rerankd.hardware import cpu_info

    return cpu_info().fast_bf16


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
        raise InputError(f"device {device!r} was asked for but CUDA is not available here; use --device cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("device 'mps' was asked for but Apple MPS is not available here; use --device cpu")
    if not (name == "cpu" or name == "mps" or name.startswith("cuda")):
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    return name


def default_dtype(device: str) -> str:
    """bf16 where the hardware runs it fast, fp16 on MPS, fp32 otherwise."""
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
    from rerankd.hardware import cpu_info

    native = sorted({"amx_bf16", "avx512_bf16"} & cpu_info().flags)
    if dtype == "bfloat16":
        return f"bfloat16: this CPU multiplies bf16 natively ({', '.join(native)}); within the accuracy bound"
    return ("float32: this CPU has no native bf16 (no AMX-BF16 or AVX512-BF16), where torch's bf16 matmul "
            "is emulated and far slower than fp32")


def torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def default_batch_tokens(device: str) -> int:
    """Tokens per forward pass: small on CPU (a batch's activations stay in cache), large on
    accelerators (parallelism). ``benchmarks/rerank100.py --batch-tokens`` measures other budgets."""
    return 4096 if device == "cpu" else 32768

