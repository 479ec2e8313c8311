"""GPU memory at run time: reading it, the profiling pass at load, the warm-up at the budget, and
what happens when a batch runs out of it.

The arithmetic lives in :mod:`rerankd.memory_plan` (pure, tested in CI); this module measures its
inputs on a CUDA device and applies its answers. On CPU and MPS every reader returns ``None`` and
nothing is planned: the static ``--batch-tokens`` default applies.

Out of memory while scoring (:class:`TokenBudget` and :func:`is_out_of_memory`, used by
:meth:`rerankd.pipeline.Pipeline.forward`): the allocator's cache is emptied, the batch is split in
two and each half retried, and the budget drops to half the failed batch's cost for good, so the
next batches are planned smaller. Only a sequence that does not fit alone fails, as a 413
(:class:`SequenceTooLargeError`).
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

from rerankd.batching import BatchLimits
from rerankd.errors import InputTooLargeError
from rerankd.memory_plan import lowered_budget

log = logging.getLogger("rerankd.memory")


@dataclass(frozen=True)
class DeviceMemory:
    """One CUDA device's memory, bytes: the driver's view (total, free) and torch's (allocated, reserved)."""

    device: str
    total: int
    free: int
    allocated: int
    reserved: int
    peak_allocated: int

    @property
    def used(self) -> int:
        """Memory in use on the device by every process (total − free)."""
        return self.total - self.free

    def gauges(self) -> dict[str, int]:
        return {"used": self.used, "reserved": self.reserved, "allocated": self.allocated, "total": self.total,
                "peak_allocated": self.peak_allocated}


def is_cuda(device: str | None) -> bool:
    return bool(device) and str(device).startswith("cuda")


def read_device_memory(device: str | None) -> DeviceMemory | None:
    """The memory of a CUDA device, or ``None`` for other devices (nothing is imported for them)."""
    if not is_cuda(device):
        return None
    import torch

    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    free, total = torch.cuda.mem_get_info(index)
    return DeviceMemory(str(device), int(total), int(free), int(torch.cuda.memory_allocated(index)),
                        int(torch.cuda.memory_reserved(index)), int(torch.cuda.max_memory_allocated(index)))


def release_cached_memory(device: str | None) -> None:
    """Give the allocator's cached blocks back (after an OOM, so the retry sees them)."""
    torch = sys.modules.get("torch")
    if torch is not None and is_cuda(device) and torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the device running out of memory (``torch.OutOfMemoryError``, or the cuBLAS
    and cuDNN allocation failures that surface as a ``RuntimeError``)."""
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(exc, oom):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("CUDA out of memory" in text or "CUBLAS_STATUS_ALLOC_FAILED" in text
                                              or "CUDNN_STATUS_ALLOC_FAILED" in text)


class SequenceTooLargeError(InputTooLargeError):
    """One sequence alone does not fit the device's memory. ``position``: its index in the batch given."""

    kind = "sequence_too_large"

    def __init__(self, message: str, position: int, tokens: int) -> None:
        super().__init__(message)
        self.position = position
        self.tokens = tokens


class TokenBudget:
    """The batch limits of one model, shared by every view of its pipeline, and what OOMs did to them.

    Example:
        >>> budget = TokenBudget(BatchLimits(max_tokens=8192))
        >>> budget.out_of_memory(failed_cost=6000)
        3000
        >>> budget.limits.max_tokens, budget.backoffs
        (3000, 1)
    """

    def __init__(self, limits: BatchLimits) -> None:
        self.limits = limits
        self.backoffs = 0
        self._lock = threading.Lock()

    def out_of_memory(self, failed_cost: int) -> int:
        """Record an OOM on a batch costing ``failed_cost``; the new (lower or equal) budget."""
        with self._lock:
            self.backoffs += 1
            new = lowered_budget(self.limits.max_tokens, failed_cost)
            if new < self.limits.max_tokens:
                log.warning("out of GPU memory on a batch of %d tokens: the batch budget drops from %d to %d tokens",
                            failed_cost, self.limits.max_tokens, new)
                self.limits = replace(self.limits, max_tokens=new)
            return self.limits.max_tokens


def forward_within_memory(run: Callable[[Sequence[Any]], Any], sequences: Sequence[Any], budget: TokenBudget,
                          cost: Callable[[Sequence[Any]], int], device: str | None, concat: Callable[[list[Any]], Any],
                          offset: int = 0) -> Any:
    """``run(sequences)``; on OOM: empty the cache, lower the budget, and run the two halves.

    Raises :class:`SequenceTooLargeError` (with the position in the original batch) for a single
    sequence that does not fit alone.
    """
    try:
        return run(sequences)
    except Exception as exc:  # noqa: BLE001 - anything but an OOM goes back to the caller untouched
        if not is_out_of_memory(exc):
            raise
    # Out of the except block: the exception's frames (and the tensors they hold) are gone now.
    release_cached_memory(device)
    charged = cost(sequences)
    budget.out_of_memory(charged)
    if len(sequences) == 1:
        raise SequenceTooLargeError(
            f"a sequence of {len(sequences[0])} tokens does not fit in {device or 'device'} memory even alone; "
            "send a shorter document (or max_doc_tokens), or serve with a lower --max-length or --quantization",
            position=offset, tokens=len(sequences[0]))
    half = len(sequences) // 2
    parts = [forward_within_memory(run, sequences[:half], budget, cost, device, concat, offset),
             forward_within_memory(run, sequences[half:], budget, cost, device, concat, offset + half)]
    return concat(parts)


# -- the profiling pass and the warm-up at load ------------------------------------------------------------


def profile_per_token(run: Callable[[int], Any], tokens: int, device: str) -> int:
    """Peak activation bytes per token of one batch of ``tokens`` tokens, measured on ``device``."""
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    run(tokens)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return max(1, -(-(peak - base) // max(1, tokens)))


__all__ = ["DeviceMemory", "read_device_memory", "release_cached_memory", "is_out_of_memory", "TokenBudget",
           "SequenceTooLargeError", "forward_within_memory", "profile_per_token", "is_cuda"]
