"""bf16 weights, fp32 residual stream: the LayerNorms of post-LN encoders compute and return fp32.

In BERT-lineage encoders (BERT, RoBERTa, XLM-R, ELECTRA, DeBERTa) every sublayer ends in
``LayerNorm(dense(x) + residual)`` and that norm's output *is* the next residual. In a bf16 model
each of those norms rounds the whole residual stream to 8 bits of mantissa, twice a layer, and the
rounding compounds through the depth: on a 24-layer model it moves scores by more than the spread of
a close candidate list (``benchmarks/peers.py`` reports Spearman against fp32; the README has the
table). Kept fp32 here, the stream is rounded only where a matrix product reads it, which oneDNN
does in bf16 anyway: :class:`~rerankd.backends.onednn_linear.OneDnnLinear` converts its input once.

Where the CPU has AVX512-BF16, the add, the norm and the conversion of each sublayer's end are one
pass of ``kernels/add_layer_norm.c`` (probed against torch at load; ``RERANKD_CPU_NORM=torch`` turns
it off), so the fp32 stream costs about what the bf16 one did.

Pre-LN models (Qwen decoders, ModernBERT, vision towers) keep their residual outside the norm, so
there is nothing to gain and their norms are left alone.
"""

from __future__ import annotations

import ctypes
import functools
import inspect
import types
from dataclasses import dataclass
from typing import Any

from rerankd._optional import require
from rerankd.backends.native import KernelUnavailable, TorchOnly, load_kernel
from rerankd.backends.onednn_linear import in_dtype, remember_conversion
from rerankd.hardware import cpu_flags

torch = require("torch")
nn = torch.nn

ENV = "RERANKD_CPU_NORM"
SOURCE = "add_layer_norm.c"
FLAGS = ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mfma")
NEEDED_FLAGS = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512_bf16"})
#: Largest |kernel − torch| the load-time probe accepts on fp32 outputs of magnitude ~1-4.
PROBE_TOLERANCE = 1e-4

# transformers' BERT lineage: the norm ending each sublayer (``*SelfOutput``, ``*Output``) and the
# embeddings' norm, each an attribute named ``LayerNorm``. Other norms of those models (DeBERTa's
# relative-position norm, which feeds a product with bf16 activations) keep their dtype.
_POST_LN_PARENTS = ("SelfOutput", "Output", "Embeddings")

_TORCH_ONLY = TorchOnly("rerankd_torch_norms_only")


#: Within ``with torch_norms_only():``, fp32 residual norms run on torch's ops (benchmarks compare the two).
torch_norms_only = _TORCH_ONLY.within


@dataclass(frozen=True)
class NormKernel:
    """The loaded kernel (``None`` when unavailable) and a sentence saying what computes the norms."""

    function: Any
    reason: str


class Fp32LayerNorm(nn.Module):
    """``nn.LayerNorm`` of ``x`` (+ ``residual``) computed in fp32 on any input dtype, returning fp32.

    Example:
        >>> norm = Fp32LayerNorm(nn.LayerNorm(8).to(torch.bfloat16))
        >>> norm(torch.randn(2, 8, dtype=torch.bfloat16)).dtype
        torch.float32
    """

    def __init__(self, norm: Any) -> None:
        super().__init__()
        self.normalized_shape = tuple(norm.normalized_shape)
        self.eps = norm.eps
        self.weight = None if norm.weight is None else nn.Parameter(norm.weight.detach().float(), requires_grad=False)
        self.bias = None if norm.bias is None else nn.Parameter(norm.bias.detach().float(), requires_grad=False)

    def forward(self, x: Any, residual: Any = None) -> Any:
        function = norm_kernel().function if not (torch.is_grad_enabled() or _TORCH_ONLY.on()) else None
        if function is not None and self._kernel_takes(x, residual):
            return _run(function, x, residual, self.weight, self.bias, self.eps, torch.get_num_threads())
        total = x.float() if residual is None else x.float() + residual
        return nn.functional.layer_norm(total, self.normalized_shape, self.weight, self.bias, self.eps)

    def _kernel_takes(self, x: Any, residual: Any) -> bool:
        return (x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float32) and x.is_contiguous()
                and len(self.normalized_shape) == 1 and x.shape[-1] == self.normalized_shape[0] and x.numel() > 0
                and (residual is None or (residual.dtype == torch.float32 and residual.shape == x.shape
                                          and residual.is_contiguous())))

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


def keep_residual_fp32(model: Any) -> int:
    """Replace the post-LN norms of ``model`` (a bf16 module) by :class:`Fp32LayerNorm`; how many.

    A sublayer's end (``dense``, dropout, ``LayerNorm(h + residual)``) then hands the residual to
    the norm, so the kernel adds as it normalizes. Only for a model whose linear layers all take fp32
    inputs to their own dtype (every ``nn.Linear`` a :class:`~rerankd.backends.onednn_linear.OneDnnLinear`):
    a plain bf16 ``nn.Linear`` would refuse the fp32 stream, so then nothing is changed and 0 is returned.
    """
    from rerankd.backends.onednn_linear import OneDnnLinear

    if any(type(m) is nn.Linear for m in model.modules()) or not any(isinstance(m, OneDnnLinear) for m in model.modules()):
        return 0
    replaced = 0
    for module in list(model.modules()):
        norm = getattr(module, "LayerNorm", None)
        if (type(norm) is nn.LayerNorm and norm.weight is not None and norm.weight.dtype == torch.bfloat16
                and type(module).__name__.endswith(_POST_LN_PARENTS)):
            module.LayerNorm = Fp32LayerNorm(norm)
            if _ends_a_sublayer(module):
                module.forward = types.MethodType(_dense_add_norm, module)
            replaced += 1
    return replaced


def _ends_a_sublayer(module: Any) -> bool:
    """transformers' ``*SelfOutput`` / ``*Output``: ``LayerNorm(dropout(dense(hidden_states)) + input_tensor)``."""
    parameters = list(inspect.signature(type(module).forward).parameters)
    return (parameters == ["self", "hidden_states", "input_tensor"] and isinstance(getattr(module, "dense", None), nn.Module)
            and isinstance(getattr(module, "dropout", None), nn.Dropout))


def _dense_add_norm(self: Any, hidden_states: Any, input_tensor: Any) -> Any:
    return self.LayerNorm(self.dropout(self.dense(hidden_states)), input_tensor)


@functools.lru_cache(maxsize=1)
def norm_kernel() -> NormKernel:
    """Build (first time), load and probe the kernel once per process; say why when it cannot run."""
    try:
        library = load_kernel(SOURCE, FLAGS, "norm kernel", env=ENV, off="torch", needed=NEEDED_FLAGS, cpu=cpu_flags())
    except KernelUnavailable as exc:
        return NormKernel(None, f"torch ({exc})")
    function = library.rerankd_add_layer_norm
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    function.argtypes = [ptr, ctypes.c_int, ptr, ptr, ptr, ptr, ptr, i64, i64, ctypes.c_float, ctypes.c_int]
    function.restype = ctypes.c_int
    error = _probe(function)
    if error > PROBE_TOLERANCE:
        return NormKernel(None, f"torch (rerankd's norm kernel differed from torch by {error:.3g} in its probe)")
    return NormKernel(function, "rerankd AVX512-BF16 kernel (add, norm and bf16 copy in one pass)")


def _run(function: Any, x: Any, residual: Any, weight: Any, bias: Any, eps: float, threads: int) -> Any:
    out32 = torch.empty(x.shape, dtype=torch.float32)
    out16 = torch.empty(x.shape, dtype=torch.bfloat16)
    cols = x.shape[-1]
    code = function(x.data_ptr(), int(x.dtype == torch.bfloat16), None if residual is None else residual.data_ptr(),
                    None if weight is None else weight.data_ptr(), None if bias is None else bias.data_ptr(),
                    out32.data_ptr(), out16.data_ptr(), x.numel() // cols, cols, eps, threads)
    if code != 0:
        raise RuntimeError(f"rerankd's norm kernel failed (code {code})")
    remember_conversion(out32, out16)  # the next layer reads the bf16 copy instead of converting
    return out32


def _probe(function: Any) -> float:
    """Largest |kernel − torch| over both input dtypes, with and without a residual, on rows whose
    width is and is not a multiple of 16; inf when the bf16 copy is not the fp32 output rounded."""
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for cols in (384, 1000):
        weight, bias = torch.randn(cols, generator=generator), torch.randn(cols, generator=generator)
        residual = 3 * torch.randn(7, cols, generator=generator)
        for dtype in (torch.bfloat16, torch.float32):
            x = (2 * torch.randn(7, cols, generator=generator) + 0.5).to(dtype)
            for res in (None, residual):
                expected = nn.functional.layer_norm(x.float() if res is None else x.float() + res, (cols,), weight, bias, 1e-5)
                out = _run(function, x, res, weight, bias, 1e-5, 1)
                if not torch.equal(in_dtype(out, torch.bfloat16), out.to(torch.bfloat16)):
                    return float("inf")
                worst = max(worst, float((out - expected).abs().max()))
    return worst
