"""How much of a GPU a model may use: the token budget per batch and the memory tier, as pure arithmetic.

Nothing here touches a device: the numbers come in (total and free bytes, weights, measured bytes
per token, the model's size) and a decision comes out with the reason for it, so CI checks every
choice with made-up memory sizes. :mod:`rerankd.gpu_memory` measures the inputs on a real GPU.

The budget follows vLLM's profiling pass: the weights are loaded, one batch is run to measure the
activation memory per token, and what is left of ``fraction × total`` (never more than was free
before loading, so another process's memory is not counted as ours) after weights and a fixed
overhead is divided by it.

Example:
    >>> GiB = 2**30
    >>> plan = plan_budget(total=80 * GiB, free=79 * GiB, weights=2 * GiB, per_token=64 * 1024,
    ...                    fraction=0.9, min_tokens=512)
    >>> plan.budget_tokens
    131072
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from rerankd.errors import InputError, ModelError

GiB = 2**30
#: CUDA context, cuBLAS workspaces and allocator fragmentation: memory no tensor accounts for.
OVERHEAD_BYTES = GiB // 2
#: The largest batch worth planning: past this GPUs are saturated and latency only grows.
MAX_BUDGET_TOKENS = 131072
#: Budgets are rounded down to a multiple of this (kernel tiles, and stable numbers in logs).
GRANULARITY = 256
DEFAULT_FRACTION = 0.9


def check_fraction(fraction: float) -> float:
    if not 0.05 <= fraction <= 1.0:
        raise InputError(f"--gpu-memory-fraction must be between 0.05 and 1.0, got {fraction}")
    return fraction


@dataclass(frozen=True)
class MemoryPlan:
    """A token budget and the numbers it was computed from (bytes)."""

    budget_tokens: int
    limit_bytes: int
    weights_bytes: int
    per_token_bytes: int
    fraction: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_budget(*, total: int, free: int, weights: int, per_token: int, fraction: float = DEFAULT_FRACTION,
                min_tokens: int = 1, max_tokens: int = MAX_BUDGET_TOKENS, overhead: int = OVERHEAD_BYTES) -> MemoryPlan:
    """The tokens one batch may hold on a device of ``total`` bytes with ``free`` free before loading.

    ``free`` is measured before the weights were loaded (memory other processes hold is not ours).
    A budget below ``min_tokens`` (one sequence of the model's longest input) is refused: the model
    would fail on its first long document.

    Example:
        >>> plan_budget(total=16 * GiB, free=16 * GiB, weights=15 * GiB, per_token=2**20, min_tokens=512)
        Traceback (most recent call last):
        ...
        rerankd.errors.ModelError: ...
    """
    check_fraction(fraction)
    limit = int(min(total * fraction, free))
    room = limit - weights - overhead
    tokens = room // max(1, per_token) if room > 0 else 0
    if tokens < min_tokens:
        raise ModelError(
            f"the model does not fit: {_gb(limit)} usable ({fraction:g} of {_gb(total)}, {_gb(free)} free) minus "
            f"{_gb(weights)} of weights and {_gb(overhead)} overhead leaves room for {max(0, tokens)} tokens per batch, "
            f"fewer than one {min_tokens}-token sequence ({per_token / 1024:.0f} KiB per token measured); raise "
            "--gpu-memory-fraction, pick --quantization or --memory-tier auto, or lower --max-length")
    budget = min(max_tokens, max(min_tokens, tokens // GRANULARITY * GRANULARITY))
    reason = (f"{_gb(limit)} usable ({fraction:g} × {_gb(total)}, {_gb(free)} free) − {_gb(weights)} weights − "
              f"{_gb(overhead)} overhead = {_gb(room)} for activations at {per_token / 1024:.0f} KiB per token → "
              f"{budget} tokens per batch" + (" (capped)" if budget == max_tokens and tokens > max_tokens else ""))
    return MemoryPlan(budget, limit, weights, per_token, fraction, reason)


def lowered_budget(current: int, failed_cost: int) -> int:
    """The budget after a batch costing ``failed_cost`` ran out of memory: half of it, never raised.

    Example:
        >>> lowered_budget(32768, 30000), lowered_budget(8192, 30000), lowered_budget(4, 1)
        (15000, 8192, 1)
    """
    return max(1, min(current, failed_cost // 2))


# -- memory tiers ---------------------------------------------------------------------------------------

#: The tiers a user may name: the memory rerankd plans for, whatever the card has (a shared GPU).
NAMED_TIERS = {"24gb": 24 * GiB, "16gb": 16 * GiB, "12gb": 12 * GiB}
TIERS = ("off", "auto", *NAMED_TIERS)

#: (quantization, bytes per weight, libraries that provide it in order of preference): the options a
#: tier tries, most precise first. 8/4-bit weights keep their scales (and the unquantized head and
#: embeddings, counted by ``UNQUANTIZED_SHARE``) as well.
_OPTIONS: tuple[tuple[str | None, float], ...] = ((None, 2.0), ("8bit", 1.0), ("4bit", 0.5))
UNQUANTIZED_SHARE = 0.08
#: Activations must leave room for at least this many tokens per batch (one rerank request of
#: 16 × 512-token pairs) for a precision to be chosen.
TIER_MIN_TOKENS = 8192


@dataclass(frozen=True)
class TierChoice:
    """What ``--memory-tier`` picked and why."""

    tier: str
    dtype: str | None
    quantization: str | None
    budget_tokens: int | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_bytes_per_token(config: Mapping[str, Any], dtype_bytes: int = 2) -> int:
    """Activation memory of one token in one layer's forward pass (inference frees each layer's).

    The residual stream, the q/k/v and attention outputs and the FFN's intermediate (twice for a
    gated FFN) live at once; × 2 for the allocator's slack. The profiling pass replaces this
    estimate with a measurement once the model is loaded.

    Example:
        >>> estimate_bytes_per_token({"hidden_size": 1024, "intermediate_size": 4096})
        36864
    """
    hidden = int(config.get("hidden_size") or config.get("d_model") or 1024)
    inter = int(config.get("intermediate_size") or 4 * hidden)
    gated = str(config.get("hidden_act", "")) in {"silu", "swiglu"} or config.get("model_type") in {"qwen3", "qwen2", "llama", "mistral"}
    return 2 * dtype_bytes * (5 * hidden + inter * (2 if gated else 1))


def choose_tier(tier: str, *, parameters: int, total: int, free: int, per_token: int,
                fraction: float = DEFAULT_FRACTION, bf16: bool = True,
                libraries: Mapping[str, str | None] | None = None) -> TierChoice:
    """Precision, quantization and budget for a model of ``parameters`` weights on this much memory.

    ``tier``: ``auto`` (the device's own memory) or a named tier (``24gb``, ``16gb``, ``12gb``: plan
    as if the card had that much, e.g. to share it). ``libraries`` maps ``"8bit"``/``"4bit"`` to
    the quantization that provides it here (``None``: no library installed). The most precise
    option whose weights leave room for :data:`TIER_MIN_TOKENS` tokens of activations wins.

    Example:
        >>> choice = choose_tier("16gb", parameters=8_200_000_000, total=80 * GiB, free=80 * GiB,
        ...                      per_token=160_000, libraries={"8bit": "bnb-8bit", "4bit": "bnb-4bit"})
        >>> choice.quantization
        'bnb-8bit'
    """
    if tier not in TIERS or tier == "off":
        raise InputError(f"unknown memory tier {tier!r}; use one of {', '.join(t for t in TIERS if t != 'off')}")
    check_fraction(fraction)
    libraries = dict(libraries or {})
    cap = NAMED_TIERS.get(tier)
    total_seen = min(total, cap) if cap else total
    free_seen = min(free, cap) if cap else free
    limit = int(min(total_seen * fraction, free_seen))
    half = "bfloat16" if bf16 else "float16"
    where = (f"{_gb(limit)} usable ({fraction:g} × {_gb(total_seen)}" + (f", the {tier} tier" if cap else "")
             + f", {_gb(free_seen)} free)")
    skipped: list[str] = []
    for bits, per_weight in _OPTIONS:
        quant = None if bits is None else libraries.get(bits)
        label = "bf16" if bits is None and bf16 else "fp16" if bits is None else f"{bits} weights"
        if bits is not None and quant is None:
            skipped.append(f"{bits} weights would need a library that is not installed ({_install_hint(bits)})")
            continue
        weights = int(parameters * (per_weight + (UNQUANTIZED_SHARE * (2.0 - per_weight) if bits else 0.0)))
        room = limit - weights - OVERHEAD_BYTES
        tokens = room // max(1, per_token) if room > 0 else 0
        if tokens >= TIER_MIN_TOKENS:
            budget = min(MAX_BUDGET_TOKENS, tokens // GRANULARITY * GRANULARITY)
            why = (f"{parameters / 1e9:.2f} B parameters in {label} take {_gb(weights)}; {where} leaves "
                   f"{_gb(room)} for activations ≈ {budget} tokens per batch")
            if skipped:
                why += "; " + "; ".join(skipped)
            return TierChoice(tier, half, quant, budget, why)
        skipped.append(f"{label} ({_gb(weights)}) leaves room for {max(0, tokens)} tokens, under {TIER_MIN_TOKENS}")
    raise ModelError(f"{parameters / 1e9:.2f} B parameters do not fit in {where}: " + "; ".join(skipped))


def _install_hint(bits: str) -> str:
    return "pip install bitsandbytes" if bits == "4bit" else "pip install bitsandbytes, or pip install torchao"


def _gb(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if abs(n) >= GiB / 10 else f"{n / 2**20:.0f} MiB"
