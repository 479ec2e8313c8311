"""What loading a model on a GPU adds to loading it anywhere: the memory tier, the quantization
check, the profiling pass and the warm-up at the token budget.

:func:`before_load` runs before the weights are read (it picks dtype and quantization for
``--memory-tier`` and refuses what cannot run here, early); :func:`after_load` measures weights and
activations, sets the pipeline's budget (:func:`rerankd.memory_plan.plan_budget`) and runs one
batch at that budget, so an OOM shows at start rather than on the first long request. On CPU and
MPS both only check the options: nothing is measured or planned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rerankd.batching import BatchLimits
from rerankd.errors import InputError, ModelError
from rerankd.gpu_memory import DeviceMemory, SequenceTooLargeError, profile_per_token, read_device_memory
from rerankd.memory_plan import DEFAULT_FRACTION, MemoryPlan, TierChoice, check_fraction, choose_tier, estimate_bytes_per_token, plan_budget

log = logging.getLogger("rerankd.memory")

#: Tokens of the profiling batch (at least one sequence of the model's longest input).
PROFILE_TOKENS = 8192


@dataclass
class GpuSetup:
    """The GPU-side choices of one model load, shown by ``rerankd info``."""

    device: str | None
    dtype: str | None
    quantization: str | None
    fraction: float = DEFAULT_FRACTION
    tier: TierChoice | None = None
    before: DeviceMemory | None = None
    plan: MemoryPlan | None = None
    warmed_tokens: int | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.tier is not None:
            out["memory_tier"] = self.tier.as_dict()
        if self.plan is not None:
            out["memory_plan"] = {**self.plan.as_dict(), "warmed_up_at_tokens": self.warmed_tokens}
        memory = read_device_memory(self.device)
        if memory is not None:
            out["gpu_memory"] = memory.gauges()
        if self.notes:
            out["gpu_notes"] = list(self.notes)
        return out


def before_load(family: Any, backend: str, device: str | None, dtype: str | None, *, quantization: str | None = None,
                memory_tier: str | None = None, fraction: float | None = None, packed: bool | None = None) -> GpuSetup:
    """Check the GPU options against the backend and device; pick dtype/quantization for a memory tier."""
    fraction = check_fraction(DEFAULT_FRACTION if fraction is None else fraction)
    tier = None if memory_tier in (None, "off") else memory_tier
    if backend != "torch":
        asked = [name for name, value in (("--quantization", quantization), ("--memory-tier", tier),
                                          ("--packed", packed)) if value is not None]
        if asked:
            raise InputError(f"{', '.join(asked)} apply to the torch backend; drop them or use --backend torch")
        return GpuSetup(device, dtype, None, fraction)
    from rerankd.device import normalize_dtype, resolve_device

    resolved = resolve_device(device)
    dtype = normalize_dtype(dtype)
    if quantization is not None:
        from rerankd.gpu_quantization import check_quantization

        check_quantization(quantization, resolved)
    setup = GpuSetup(resolved, dtype, quantization, fraction, before=read_device_memory(resolved))
    if tier is not None:
        setup.tier = _choose_tier(family, tier, setup)
        if setup.tier.dtype and dtype is None:
            setup.dtype = setup.tier.dtype
        if setup.tier.quantization and quantization is None:
            from rerankd.gpu_quantization import check_quantization

            check_quantization(setup.tier.quantization, resolved)
            setup.quantization = setup.tier.quantization
    return setup


def _choose_tier(family: Any, tier: str, setup: GpuSetup) -> TierChoice:
    if setup.before is None:
        return TierChoice(tier, None, None, None, f"memory tiers plan GPU memory; on {setup.device} nothing was changed")
    import torch

    from rerankd.gpu_quantization import available_quantizations

    choice = choose_tier(tier, parameters=count_parameters(Path(family.model_dir)), total=setup.before.total,
                         free=setup.before.free, per_token=estimate_bytes_per_token(family.config),
                         fraction=setup.fraction, bf16=bool(torch.cuda.is_bf16_supported()),
                         libraries=available_quantizations())
    if setup.dtype is not None or setup.quantization is not None:
        given = ", ".join(x for x in (setup.dtype, setup.quantization) if x)
        choice = replace(choice, reason=choice.reason + f"; --dtype/--quantization given ({given}) are kept")
    return choice


def after_load(setup: GpuSetup, pipeline: Any, requested_tokens: int | None) -> None:
    """On CUDA: measure, plan the token budget (unless ``--batch-tokens`` was given), warm up at it."""
    if setup.before is None:
        return
    import torch

    device = str(setup.device)
    family = pipeline.family
    length = int(family.max_length)
    weights = max(0, torch.cuda.memory_allocated(device) - setup.before.allocated)
    rows = max(1, PROFILE_TOKENS // length)
    per_token = profile_per_token(lambda tokens: _run(pipeline, rows, length), rows * length, device)
    plan = plan_budget(total=setup.before.total, free=setup.before.free, weights=weights, per_token=per_token,
                       fraction=setup.fraction, min_tokens=length)
    setup.plan = plan
    budget = plan.budget_tokens
    if setup.tier is not None and setup.tier.budget_tokens:
        budget = min(budget, setup.tier.budget_tokens)
    if requested_tokens is not None:
        if requested_tokens > plan.budget_tokens:
            setup.notes.append(f"--batch-tokens {requested_tokens} is above the planned {plan.budget_tokens}; "
                               "kept, an OOM will lower it")
        budget = requested_tokens
    pipeline.batch_limits = BatchLimits(budget, pipeline.batch_limits.max_rows)
    log.info("memory plan for %s: %s", pipeline.name, plan.reason)
    warm_rows = max(1, min(pipeline.batch_limits.max_rows, budget // length))
    try:
        _run(pipeline, warm_rows, length)
    except SequenceTooLargeError as exc:
        raise ModelError(f"one {length}-token sequence does not fit on {device} next to the weights; lower "
                         "--max-length, or pick --quantization / --memory-tier auto") from exc
    setup.warmed_tokens = warm_rows * length
    if pipeline.budget.backoffs:
        setup.notes.append(f"the warm-up ran out of memory at {budget} tokens; the budget is now "
                           f"{pipeline.batch_limits.max_tokens}")


def _run(pipeline: Any, rows: int, length: int) -> None:
    from rerankd.families import Encoded

    family = pipeline.family
    token = min(100, int(family.config.get("vocab_size") or 101) - 1)
    types = (0,) * length if family.padding.token_type_ids else None
    pipeline.forward([Encoded(input_ids=(token,) * length, token_type_ids=types) for _ in range(rows)])


def count_parameters(model_dir: Path) -> int:
    """Weights in a checkpoint, read from the safetensors headers (no tensor is loaded); else from file sizes."""
    from rerankd.memory import read_weights

    weights = read_weights(model_dir)
    total = weights.parameters if weights is not None else 0
    if total:
        return total
    from rerankd.measure import weights_size_bytes

    return weights_size_bytes(model_dir) // 4
