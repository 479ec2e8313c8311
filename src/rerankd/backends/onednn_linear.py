"""Linear layers on oneDNN with their weights reordered once, and the activation after them fused.

``nn.Linear`` on a CPU hands its plain row-major weight to oneDNN (bf16) or MKL (fp32) on every call,
and the activation that follows is a separate pass over the output. Reordering each weight once
into oneDNN's blocked layout and running ``torch.ops.mkldnn._linear_pointwise`` with the activation
as a post-op removes both costs (``benchmarks/onednn_linear.py`` measures both ways interleaved; the
README has the table).

These are the ops torch's own compiler emits for frozen CPU graphs (``torch._inductor.config.freezing``).
We call them directly because ``torch.compile`` cannot take the packed modules: the per-sequence
boundaries of every batch are Python integers, so each batch recompiled (MiniLM: 192 s for the first
rerank-100 call, then the recompile limit and eager speed). Where the ops are missing (a torch build
without oneDNN, bf16 on a CPU oneDNN cannot run it on, fp16, or weights not on the CPU), a layer is
left as it was.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from rerankd._optional import require
from rerankd.backends.allocator import return_freed_memory

torch = require("torch")
nn = torch.nn

# Activation module class → oneDNN post-op (name, algorithm). Exactly the same function, or no entry:
# an approximation (FastGELU, QuickGELU) stays a separate pass.
_POST_OPS: dict[str, tuple[str, str]] = {
    "GELUActivation": ("gelu", "none"),  # erf GELU, BERT / XLM-R "gelu"
    "GELU": ("gelu", "none"),
    "NewGELUActivation": ("gelu", "tanh"),
    "PytorchGELUTanh": ("gelu", "tanh"),
    "GELUTanh": ("gelu", "tanh"),
    "SiLUActivation": ("swish", ""),  # Qwen / Llama "silu"
    "SiLU": ("swish", ""),
    "ReLU": ("relu", ""),
}
# oneDNN picks its blocked layout for a typical row count; packed CPU batches run thousands of tokens.
_ROWS_HINT = 4096


class OneDnnLinear(nn.Module):
    """An ``nn.Linear`` (optionally followed by an activation) on a weight reordered once for oneDNN.

    Inference only: the reordered weight is an opaque oneDNN tensor, not a trainable parameter.

    Example:
        >>> layer = OneDnnLinear(nn.Linear(384, 1536), post_op=("gelu", "none"))  # doctest: +SKIP
        >>> layer(torch.randn(8, 384))  # == gelu(linear(x))                       # doctest: +SKIP
    """

    def __init__(self, linear: Any, post_op: tuple[str, str] = ("none", "")) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.dtype = linear.weight.dtype
        self.weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), _ROWS_HINT)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.post_op = post_op

    def forward(self, x: Any) -> Any:
        rows = in_dtype(x, self.dtype).reshape(-1, self.in_features)
        out = torch.ops.mkldnn._linear_pointwise(rows, self.weight, self.bias, self.post_op[0], [], self.post_op[1])
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, post_op={self.post_op[0]}"


# The last input converted to a layer's dtype, per thread. An fp32 residual stream
# (backends/residual_fp32.py) feeds several layers the same tensor (an encoder's query, key and
# value projections): it is converted once. The entry holds the source itself, so its identity
# cannot pass to another tensor while cached. (Inference tensors keep no version counter: this relies
# on the stream not being changed in place between the layers that read it, as no encoder does.)
_last_conversion = threading.local()


def in_dtype(x: Any, dtype: Any) -> Any:
    """``x`` as ``dtype``: ``x`` itself, the conversion remembered for this very tensor, or a new one."""
    if x.dtype == dtype:
        return x
    last = getattr(_last_conversion, "entry", None)
    if last is not None and last[0] is x and last[1].dtype == dtype:
        return last[1]
    converted = x.to(dtype)
    remember_conversion(x, converted)
    return converted


def remember_conversion(source: Any, converted: Any) -> None:
    """Tell the layers that ``converted`` is ``source`` in another dtype (a kernel wrote both at once)."""
    _last_conversion.entry = (source, converted)


class PatchLinear(nn.Module):
    """A convolution whose kernel is its stride, run as one linear layer on inputs of exactly one kernel.

    Vision towers embed patches this way (Qwen3-VL: ``Conv3d`` over ``(rows, 3, 2, 16, 16)`` views):
    each output is one dot product of a flattened patch with a flattened filter, which torch's CPU
    convolution computes at a few per cent of the matrix units' speed (124 ms for one 640×416 image
    on the Qwen3-VL-2B shape, next to 0.42 s for the tower's 100 linear layers). Other inputs go to
    the convolution as before.
    """

    def __init__(self, conv: Any) -> None:
        super().__init__()
        self.conv = conv
        self.kernel = tuple(conv.kernel_size)
        flat = nn.Linear(conv.weight[0].numel(), conv.out_channels, bias=conv.bias is not None,
                         dtype=conv.weight.dtype)
        flat.weight.copy_(conv.weight.detach().reshape(conv.out_channels, -1))
        if conv.bias is not None:
            flat.bias.copy_(conv.bias.detach())
        self.linear = OneDnnLinear(flat) if _movable(flat) else flat

    @property
    def weight(self) -> Any:  # callers read the convolution's dtype from it (Qwen3-VL's patch embedding)
        return self.conv.weight

    def forward(self, x: Any) -> Any:
        if tuple(x.shape[2:]) != self.kernel:
            return self.conv(x)
        return self.linear(x.reshape(x.shape[0], -1)).reshape(x.shape[0], -1, *([1] * len(self.kernel)))


def _patch_convolution(layer: Any) -> bool:
    """A convolution that cuts its input into patches: kernel == stride, no padding, dilation or groups."""
    return (type(layer) in (nn.Conv2d, nn.Conv3d) and tuple(layer.kernel_size) == tuple(layer.stride)
            and not any(layer.padding) and all(d == 1 for d in layer.dilation) and layer.groups == 1
            and layer.padding_mode == "zeros" and layer.weight.device.type == "cpu")


@dataclass
class OneDnnReport:
    """What :func:`use_onednn_linear` changed: layers moved to oneDNN, activations fused into them."""

    layers: int = 0
    fused_activations: int = 0


def onednn_linear_supported(dtype: Any) -> bool:
    """Whether this torch build and CPU run oneDNN linear layers in ``dtype`` (fp32 or bf16)."""
    mkldnn = getattr(torch.backends, "mkldnn", None)
    if mkldnn is None or not mkldnn.is_available():
        return False
    if not (hasattr(torch.ops.mkldnn, "_linear_pointwise") and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


def _movable(layer: Any) -> bool:
    """A plain ``nn.Linear`` whose weight oneDNN can take (on the CPU, in a dtype it runs here)."""
    return type(layer) is nn.Linear and layer.weight.device.type == "cpu" and onednn_linear_supported(layer.weight.dtype)


def _modules(model: Any, wanted: Any) -> Any:
    """The submodules of ``model`` that ``wanted`` picks, looked up one at a time by name, so that
    nothing but the caller holds a module while its children are being replaced."""
    names = [name for name, module in model.named_modules() if wanted(module)]
    for name in names:
        yield model.get_submodule(name)


def use_onednn_linear(model: Any) -> OneDnnReport:
    """Replace ``model``'s ``nn.Linear`` layers in place by :class:`OneDnnLinear`, fusing activations.

    Layers oneDNN cannot take here stay as they are, so any model may be passed (an empty report
    says nothing moved).

    Three places have an activation right after a linear layer: the FFN of BERT-style encoders
    (``dense`` then ``intermediate_act_fn``), the gated MLP of Llama-style decoders
    (``act_fn(gate_proj(x)) * up_proj(x)``) and Qwen3-VL's vision MLP and patch merger
    (``linear_fc2(act_fn(linear_fc1(x)))``). There the activation moves into the layer and the
    module's own activation becomes the identity. Patch-embedding convolutions become
    :class:`PatchLinear`.
    """
    report = OneDnnReport()
    with torch.inference_mode():
        # The loops walk module *names*: a list of the modules themselves would hold every replaced
        # nn.Linear, and so every plain weight beside its reordered copy, until the loop ends (+0.55 GB
        # at the peak of an fp32 XLM-R large load).
        for module in _modules(model, lambda m: type(m).__name__.endswith(("Intermediate", "MLP", "PatchMerger"))):
            for linear_name, act_name in (("dense", "intermediate_act_fn"), ("gate_proj", "act_fn"),
                                          ("linear_fc1", "act_fn")):  # Qwen3-VL's vision MLP and merger
                linear, act = getattr(module, linear_name, None), getattr(module, act_name, None)
                post_op = _POST_OPS.get(type(act).__name__) if act is not None else None
                if post_op is not None and _movable(linear):
                    setattr(module, linear_name, OneDnnLinear(linear, post_op))
                    setattr(module, act_name, nn.Identity())
                    report.fused_activations += 1
                    return_freed_memory()
        for module in _modules(model, lambda m: any(_movable(child) for child in m.children())):
            moved = [name for name, child in module.named_children() if _movable(child)]
            for name in moved:
                setattr(module, name, OneDnnLinear(getattr(module, name)))
            if moved:
                # Each reorder frees the plain weight it copied; glibc would keep those buffers and the
                # process would end up holding the linear weights twice (+0.55 GB on XLM-R large).
                return_freed_memory()
        for module in _modules(model, lambda m: any(_patch_convolution(child) for child in m.children())):
            for name, child in list(module.named_children()):
                if _patch_convolution(child):
                    setattr(module, name, PatchLinear(child))
        report.layers = sum(isinstance(m, OneDnnLinear) for m in model.modules())
    return report
