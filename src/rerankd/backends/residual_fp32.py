"""bf16 weights, fp32 residual stream: the LayerNorms of post-LN encoders compute and return fp32.

In BERT-lineage encoders (BERT, RoBERTa, XLM-R, ELECTRA, DeBERTa) every sublayer ends in
``LayerNorm(dense(x) + residual)`` and that norm's output *is* the next residual. In a bf16 model
each of those norms rounds the whole residual stream to 8 bits of mantissa, twice a layer, and the
rounding compounds through the depth: on a 24-layer model it moves scores by more than the spread of
a close candidate list (``benchmarks/peers.py`` reports Spearman against fp32; the README has the
table). Kept fp32 here, the stream is rounded only where a matrix product reads it, which oneDNN
does in bf16 anyway: :class:`~rerankd.backends.onednn_linear.OneDnnLinear` converts its input once.

Pre-LN models (Qwen decoders, ModernBERT, vision towers) keep their residual outside the norm, so
there is nothing to gain and their norms are left alone.
"""

from __future__ import annotations

from typing import Any

from rerankd._optional import require

torch = require("torch")
nn = torch.nn

# transformers' BERT lineage: the norm ending each sublayer (``*SelfOutput``, ``*Output``) and the
# embeddings' norm, each an attribute named ``LayerNorm``. Other norms of those models (DeBERTa's
# relative-position norm, which feeds a product with bf16 activations) keep their dtype.
_POST_LN_PARENTS = ("SelfOutput", "Output", "Embeddings")


class Fp32LayerNorm(nn.Module):
    """``nn.LayerNorm`` computed in fp32 on any input dtype, returning fp32 (weights kept fp32).

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

    def forward(self, x: Any) -> Any:
        return nn.functional.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


def keep_residual_fp32(model: Any) -> int:
    """Replace the post-LN norms of ``model`` (a bf16 module) by :class:`Fp32LayerNorm`; how many.

    Only for a model whose linear layers all take fp32 inputs to their own dtype (every ``nn.Linear``
    a :class:`~rerankd.backends.onednn_linear.OneDnnLinear`): a plain bf16 ``nn.Linear`` would refuse
    the fp32 stream, so then nothing is changed and 0 is returned.
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
            replaced += 1
    return replaced
