"""rerankd's bf16 attention kernel for CPUs with AMX, for packed sequences (bidirectional or causal).

Cross-encoders spend ~45% of their CPU time in attention (MiniLM-L6, rerank-100, AMX machine), in
torch's flash-attention kernel, which on sequences of 100-300 tokens and heads of 32-64 dims runs far
below the matrix units' speed. ``kernels/attention_bf16.c`` does one (sequence, head) per task with
AMX tiles for both products and an fp32 softmax; ``benchmarks/cpu_attention.py`` compares the two.

There is no prebuilt binary: the C file is compiled on first use (:mod:`.native`). Where anything
is missing (no AMX, no compiler, no GNU OpenMP in the process, the kernel's probe disagreeing with
torch) rerankd uses torch's SDPA and :func:`status` says why; ``RERANKD_CPU_ATTENTION=sdpa`` turns
the kernel off.

Numerics match torch's bf16 kernel up to rounding: fp32 scores, fp32 softmax, probabilities rounded to
bf16 for the product with the values, fp32 accumulation. Outputs differ from torch's in the last
bf16 bit on some elements; fp32 models never use it.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import Any

from rerankd._optional import require
from rerankd.backends.native import KernelUnavailable, TorchOnly, load_kernel
from rerankd.hardware import cpu_flags

torch = require("torch")

ENV = "RERANKD_CPU_ATTENTION"
SOURCE = "attention_bf16.c"
FLAGS = ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mamx-tile", "-mamx-bf16", "-mfma")
HEAD_DIMS = (32, 64, 128)
NEEDED_FLAGS = frozenset({"amx_bf16", "amx_tile", "avx512_bf16"})
#: Largest |kernel − torch SDPA| the load-time probe accepts (bf16 outputs of magnitude ≲ 1: a few ulps).
PROBE_TOLERANCE = 0.03

_TORCH_ONLY = TorchOnly("rerankd_torch_sdpa_only")


@dataclass(frozen=True)
class KernelStatus:
    """The loaded kernel (``None`` when unavailable) and a sentence saying what attention runs."""

    function: Any
    reason: str


#: Within ``with torch_sdpa_only():``, packed attention uses torch's SDPA (load-time probes compare modules on it).
torch_sdpa_only = _TORCH_ONLY.within


def usable(query: Any, key: Any) -> bool:
    """True when :func:`attention` can compute this call: bf16 on CPU, a supported head size, key
    heads that divide the query heads (grouped-query attention needs no repeated keys)."""
    return (query.device.type == "cpu" and query.dtype == torch.bfloat16 and key.dtype == torch.bfloat16
            and query.shape[-1] in HEAD_DIMS and query.shape[1] % key.shape[1] == 0 and not _TORCH_ONLY.on()
            and all(t.stride(-1) == 1 for t in (query, key)) and status().function is not None)


def attention(query: Any, key: Any, value: Any, bounds: list[int], scaling: float | None,
              query_bounds: list[int] | None = None, *, causal: bool = False,
              prefix: tuple[Any, Any] | None = None) -> Any:
    """Attention per packed sequence: (1, heads, T, d) in, (1, T, heads, d) out, as SDPA per sequence.

    ``query_bounds``: where each sequence's queries lie when they are not all its tokens. ``prefix``:
    keys and values (1, kv_heads, P, d) that every sequence sees before its own (a shared prefix);
    with ``causal``, each query also sees its own sequence's keys up to its position.
    """
    return _run(status().function, query, key, value, bounds, query_bounds, scaling, torch.get_num_threads(),
                causal, prefix)


def _run(function: Any, query: Any, key: Any, value: Any, bounds: list[int], query_bounds: list[int] | None,
         scaling: float | None, threads: int, causal: bool = False, prefix: tuple[Any, Any] | None = None) -> Any:
    heads, head_dim = query.shape[1], query.shape[-1]
    value = value if value.stride(-1) == 1 else value.contiguous()
    key_bounds = torch.tensor(bounds, dtype=torch.int64)
    row_bounds = key_bounds if query_bounds is None else torch.tensor(query_bounds, dtype=torch.int64)
    out = torch.empty((int(row_bounds[-1]), heads, head_dim), dtype=torch.bfloat16)
    scale = float(scaling) if scaling is not None else head_dim ** -0.5
    if prefix is not None:
        prefix_key, prefix_value = (t if t.stride(-1) == 1 else t.contiguous() for t in prefix)
        if prefix_key.shape[1] != key.shape[1]:
            raise ValueError("the prefix's keys have another number of heads than the sequences'")
        shared = (prefix_key.data_ptr(), prefix_key.stride(2), prefix_key.stride(1),
                  prefix_value.data_ptr(), prefix_value.stride(2), prefix_value.stride(1), prefix_key.shape[2])
    else:
        shared = (None, 0, 0, None, 0, 0, 0)
    code = function(query.data_ptr(), query.stride(2), query.stride(1), key.data_ptr(), key.stride(2), key.stride(1),
                    value.data_ptr(), value.stride(2), value.stride(1), *shared, out.data_ptr(), key_bounds.data_ptr(),
                    row_bounds.data_ptr(), len(bounds) - 1, heads, key.shape[1], head_dim, int(causal), scale, threads)
    if code != 0:
        raise RuntimeError(f"rerankd's attention kernel failed (code {code}: -1 head dim or heads, -2 out of memory)")
    return out.unsqueeze(0)


@functools.lru_cache(maxsize=1)
def status() -> KernelStatus:
    """Build (first time), load and probe the kernel once per process; say why when it cannot run."""
    try:
        library = load_kernel(SOURCE, FLAGS, "attention kernel", env=ENV, off="sdpa", needed=NEEDED_FLAGS,
                               cpu=cpu_flags())
    except KernelUnavailable as exc:
        return KernelStatus(None, f"sdpa ({exc})")
    if library.rerankd_request_amx() != 0:
        return KernelStatus(None, "sdpa (the operating system refused AMX tile state)")
    function = library.rerankd_attention_bf16
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    function.argtypes = [ptr, i64, i64, ptr, i64, i64, ptr, i64, i64,  # queries, keys, values
                         ptr, i64, i64, ptr, i64, i64, i64,  # prefix keys, values, length
                         ptr, ptr, ptr, i64, i64, i64, i64, ctypes.c_int, ctypes.c_float, ctypes.c_int]
    function.restype = ctypes.c_int
    error = _probe(function)
    if error > PROBE_TOLERANCE:
        return KernelStatus(None, f"sdpa (rerankd's attention kernel differed from torch by {error:.3g} in its probe)")
    return KernelStatus(function, "rerankd AMX kernel (bf16 layers)")


def reference(query: Any, key: Any, value: Any, bounds: list[int], scaling: float | None = None, *,
              causal: bool = False, prefix: tuple[Any, Any] | None = None) -> Any:
    """What :func:`attention` computes, by torch's SDPA one sequence at a time (explicit masks): the probe's
    and the tests' oracle. Same layouts as :func:`attention`."""
    groups = query.shape[1] // key.shape[1]
    parts = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        keys, values = key[:, :, start:end], value[:, :, start:end]
        if prefix is not None:
            keys, values = torch.cat([prefix[0], keys], 2), torch.cat([prefix[1], values], 2)
        keys, values = keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1)
        mask = None
        if causal:
            own, seen = end - start, keys.shape[2]
            mask = torch.ones(own, seen, dtype=torch.bool).tril(seen - own)
        parts.append(torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end], keys, values, attn_mask=mask, scale=scaling).transpose(1, 2))
    return torch.cat(parts, 1)


def _probe(function: Any) -> float:
    """Largest |kernel − torch SDPA| on random sequences: every head size, bidirectional, causal, and
    causal after a shared prefix with grouped-query heads."""
    generator = torch.Generator().manual_seed(0)
    bounds = [0, 1, 17, 66, 200]  # a single token, lengths off and on the 16- and 32-key blocks
    worst = 0.0
    for head_dim in HEAD_DIMS:
        qkv = torch.randn(1, bounds[-1] + 23, 3, 4, head_dim, generator=generator).to(torch.bfloat16)
        query, key, value = (qkv[:, 23:, i].transpose(1, 2) for i in range(3))
        shared = (qkv[:, :23, 1, :2].transpose(1, 2), qkv[:, :23, 2, :2].transpose(1, 2))
        cases = [(key, value, False, None), (key, value, True, None), (key[:, :2], value[:, :2], True, shared)]
        for keys, values, causal, prefix in cases:
            expected = reference(query, keys, values, bounds, causal=causal, prefix=prefix)
            try:
                out = _run(function, query, keys, values, bounds, None, None, 1, causal, prefix)
            except RuntimeError:
                return float("inf")
            worst = max(worst, float((out.float() - expected.float()).abs().max()))
    return worst
