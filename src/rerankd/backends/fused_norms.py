"""Llama-style RMSNorm layers as torch's fused kernel, bit for bit the layer they replace.

transformers writes the RMSNorm of Qwen3, Qwen3-VL, Qwen2 and Llama as eight tensor operations
(to fp32, pow, mean, add, rsqrt, mul, back to the input dtype, times the weight); on a CPU each is
a pass over the activations, and a decoder runs four such norms per layer (before attention, on the
queries, on the keys, before the MLP). ``torch.nn.functional.rms_norm`` does the first seven in one
kernel, accumulating in fp32 and rounding once to the input dtype, which is exactly what the
module's explicit casts do; the weight is then applied in the input dtype, as there.
``benchmarks/vl_rerank.py`` measures the whole model both ways.

A layer is replaced only after both forms give identical outputs on a probe in its own dtype, so a
norm written differently (Gemma's ``1 + weight``, a weight applied in fp32) stays as it was.
"""

from __future__ import annotations

from typing import Any

from rerankd._optional import require

torch = require("torch")
nn = torch.nn


class FusedRMSNorm(nn.Module):
    """``weight * rms_norm(x)`` with the norm as one kernel; shares the weight of the layer it replaces.

    Example:
        >>> from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm   # doctest: +SKIP
        >>> FusedRMSNorm(Qwen3RMSNorm(1024))(torch.randn(4, 1024))           # doctest: +SKIP
    """

    def __init__(self, norm: Any) -> None:
        super().__init__()
        self.weight = norm.weight
        self.eps = float(norm.variance_epsilon)
        self.shape = (int(norm.weight.shape[-1]),)

    def forward(self, hidden_states: Any) -> Any:
        return self.weight * torch.nn.functional.rms_norm(hidden_states, self.shape, None, self.eps)

    def extra_repr(self) -> str:
        return f"{self.shape}, eps={self.eps}"


def _llama_style(module: Any) -> bool:
    weight = getattr(module, "weight", None)
    return (type(module).__name__.endswith("RMSNorm") and isinstance(getattr(module, "variance_epsilon", None), float)
            and isinstance(weight, torch.Tensor) and weight.dim() == 1 and weight.device.type == "cpu")


def _same_on_probe(norm: Any, fused: FusedRMSNorm) -> bool:
    generator = torch.Generator().manual_seed(0)
    # Rows of very different scales: the cast back to the input dtype and the eps both matter there.
    scales = torch.logspace(-3, 3, 16, dtype=torch.float32).unsqueeze(1)
    probe = (torch.randn(16, fused.shape[0], generator=generator) * scales).to(norm.weight.dtype)
    with torch.inference_mode():
        return bool(torch.equal(norm(probe), fused(probe)))


def use_fused_rms_norm(model: Any) -> int:
    """Replace ``model``'s Llama-style RMSNorm layers (on the CPU) in place; returns how many moved."""
    moved = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if _llama_style(child):
                fused = FusedRMSNorm(child)
                if _same_on_probe(child, fused):
                    setattr(module, name, fused)
                    moved += 1
    return moved
