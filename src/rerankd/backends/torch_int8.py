"""torch with dynamic int8 linear layers (CPU): weights int8 ahead of time, activations quantized per batch.

Built on the same scoring modules as the torch backend (``build_module``), with the ``nn.Linear``
layers (but the FFN down-projections) replaced by torch's dynamically quantized ones (fbgemm/onednn int8 GEMMs, VNNI where the CPU has it).
Embeddings, LayerNorm and attention stay fp32; the fp32 linear layers run on oneDNN
(``onednn_linear.py``). Packed inference (see ``packed.py``) applies as it does
to the fp32 modules: it only changes how attention is called.
"""

from __future__ import annotations

from typing import Any

from rerankd._optional import require
from rerankd.backends.torch_backend import TorchBackend
from rerankd.errors import InputError
from rerankd.families import Family


class TorchInt8Backend(TorchBackend):
    """Dynamic int8 quantization of the family's torch module, on CPU (runs like :class:`TorchBackend`).

    Example:
        >>> Reranker.from_pretrained("cross-encoder/ms-marco-MiniLM-L6-v2", backend="torch-int8")  # doctest: +SKIP
    """

    name = "torch-int8"

    def __init__(self, family: Family, device: str | None = None, dtype: str | None = None, packed: bool | None = None,
                 adaptive_threads: bool = True, feature_cache_bytes: int | None = None) -> None:
        torch = require("torch")
        from rerankd.backends.torch_modules import build_module

        if device not in (None, "auto", "cpu"):
            raise InputError(f"the torch-int8 backend runs on CPU only, not {device!r}; use --backend torch there")
        if dtype not in (None, "auto", "int8", "qint8"):
            raise InputError(f"the torch-int8 backend computes in int8; drop dtype={dtype!r} or use --backend torch")
        module = build_module(family, torch.float32, "cpu")
        parameters = sum(p.numel() for p in module.parameters())
        # The rest is the torch backend's own load on the quantized module: packing, the vision tower's
        # pieces and image-feature cache for models that read media, oneDNN for the layers left fp32.
        super().__init__(family, device="cpu", dtype="fp32", packed=packed, adaptive_threads=adaptive_threads,
                         module=quantize_linear_layers(module), feature_cache_bytes=feature_cache_bytes)
        self.parameters = parameters  # quantized layers hide their weights from parameters()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "dtype": "int8", "dtype_choice": "int8: dynamically quantized linear layers (torch-int8)",
                "quantized_engine": self.torch.backends.quantized.engine}


def quantize_linear_layers(module: Any) -> Any:
    """``module`` with its ``nn.Linear`` layers as dynamically quantized int8 ones (per-channel weight scales).

    The FFN down-projections stay fp32, as in :func:`rerankd.export.quantize_int8` and for the same
    reason (outliers after the activation). torch's x86 dynamic int8 keeps less ranking agreement than
    onnxruntime's (its activations use a reduced range).
    """
    torch = require("torch")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    from rerankd.export import is_ffn_output

    spec = {name: per_channel_dynamic_qconfig for name, layer in module.named_modules()
            if isinstance(layer, torch.nn.Linear) and not is_ffn_output(name)}
    return quantize_dynamic(module, spec, dtype=torch.qint8, inplace=False)
