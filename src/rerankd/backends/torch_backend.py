"""The torch backend: CPU, CUDA and MPS, SDPA attention, inference mode."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from rerankd._optional import require
from rerankd.backends.threads import ThreadGovernor, governed
from rerankd.batching import pad_batch
from rerankd.device import default_dtype, explain_dtype, normalize_dtype, resolve_device, torch_dtype
from rerankd.families import Encoded, Family


class TorchBackend:
    """Runs a family's torch module on one device: packed on CPU where the architecture allows, else padded.

    Example:
        >>> backend = TorchBackend(family, device="cpu", dtype="bf16")   # doctest: +SKIP
        >>> backend.forward(prepared.sequences)                          # doctest: +SKIP
    """

    name = "torch"

    def __init__(self, family: Family, device: str | None = None, dtype: str | None = None, packed: bool | None = None,
                 onednn: bool = True, adaptive_threads: bool = True, quantization: str | None = None,
                 module: Any = None, feature_cache_bytes: int | None = None, fp32_residual: bool = True) -> None:
        """``packed``: ``None`` packs on CPU only; ``True`` also on CUDA (opt-in: that path awaits its GPU
        verification, ``benchmarks/gpu_check.py``). ``quantization``: CUDA weight quantization
        (:mod:`rerankd.gpu_quantization`). ``module``: an already built padded module (the weights
        of ``family``) instead of loading them from ``family.model_dir``. ``feature_cache_bytes``:
        the image-feature cache of a model that reads media (default 512 MiB, 0 = off).
        ``fp32_residual``: in bf16 on oneDNN layers, a post-LN encoder's residual stream stays fp32
        (:mod:`.residual_fp32`); False rounds it to bf16 as the plain model does, to compare."""
        self.torch = require("torch")
        from rerankd.backends.allocator import return_freed_memory, reuse_large_buffers
        from rerankd.backends.onednn_linear import OneDnnReport, use_onednn_linear
        from rerankd.backends.packed import packed_module, packs_by_default, supports_packing
        from rerankd.backends.residual_fp32 import keep_residual_fp32
        from rerankd.backends.torch_modules import build_module
        from rerankd.backends.vision_attention import use_blocked_vision_attention

        self.family = family
        self.device = resolve_device(device)
        # Before the first large buffer: CPU inference reuses them instead of faulting in new pages.
        self.allocator = reuse_large_buffers() if self.torch.device(self.device).type == "cpu" else None
        self.governor = cpu_thread_governor(self.torch, self.device, adaptive_threads)
        self.dtype = normalize_dtype(dtype) or default_dtype(self.device)
        self.dtype_choice = explain_dtype(self.device, self.dtype, requested=normalize_dtype(dtype) is not None)
        self.quantization = quantization
        if quantization is not None:
            from rerankd.gpu_quantization import check_quantization

            check_quantization(quantization, self.device)
        self.module = module if module is not None else build_module(family, torch_dtype(self.dtype), self.device,
                                                                    quantization)
        # A model that reads media takes the sequences themselves (their extras hold the media), and
        # keeps its vision tower's output per image (backends/feature_cache.py).
        self.reads_media = bool(getattr(family.head, "vision", False))
        self.feature_cache = None
        if self.reads_media:
            from rerankd.backends.feature_cache import DEFAULT_FEATURE_CACHE_BYTES, FeatureCache

            size = DEFAULT_FEATURE_CACHE_BYTES if feature_cache_bytes is None else feature_cache_bytes
            self.feature_cache = FeatureCache(size) if size > 0 else None
            self.module.cache = self.feature_cache
        self.parameters = sum(p.numel() for p in self.module.parameters())
        # Packing pays on CPUs (see backends/packed.py); on CUDA it is opt-in until verified there.
        self.packed = packs_by_default(self.device, supports_packing(family)) if packed is None else packed
        if self.packed:
            self.module = packed_module(family, self.module)
        # On CPU, a vision tower's attention rotates in cache-sized blocks (backends/vision_attention.py),
        # before the layers it shares become oneDNN layers.
        self.blocked_vision_attention = use_blocked_vision_attention(self.module)
        # On CPU, weights reordered once for oneDNN and activations fused (backends/onednn_linear.py);
        # onednn=False keeps plain nn.Linear layers, to compare.
        self.onednn = use_onednn_linear(self.module) if onednn else OneDnnReport()
        self.fp32_residual_norms = keep_residual_fp32(self.module) if fp32_residual and self.dtype == "bfloat16" else 0
        return_freed_memory()  # the load's and the reorder's temporaries

    @property
    def pads(self) -> bool:
        return not self.packed

    def forward(self, sequences: Sequence[Encoded]) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode(), governed(torch, self.governor, sum(len(s) for s in sequences)):
            if self.packed or self.reads_media:
                return self.module(sequences).float().cpu().numpy()
            batch = pad_batch(sequences, self.family.padding)
            inputs: dict[str, Any] = {
                "input_ids": torch.from_numpy(batch.input_ids).to(self.device),
                "attention_mask": torch.from_numpy(batch.attention_mask).to(self.device),
            }
            if batch.token_type_ids is not None:
                inputs["token_type_ids"] = torch.from_numpy(batch.token_type_ids).to(self.device)
            out = self.module(**inputs)
            return out.float().cpu().numpy()

    def attention(self) -> str:
        """The attention kernel of packed batches here (``varlen``, ``amx`` or ``sdpa``), or ``padded``.

        ``amx``: rerankd's kernel for bf16 attention on CPU (:mod:`.cpu_attention`);
        ``describe()["cpu_attention"]`` says why it is or is not used.
        """
        if not self.packed:
            return "padded"
        from rerankd.backends import cpu_attention
        from rerankd.backends.packed import attention_kernel, varlen_parameters

        kernel = attention_kernel(self.torch.device(self.device).type, torch_dtype(self.dtype), varlen_parameters())
        if kernel == "sdpa" and self._cpu_attention_applies() and cpu_attention.status().function:
            return "amx"
        return kernel

    def _cpu_attention_applies(self) -> bool:
        """Packed bf16 on CPU: where rerankd's attention kernel runs when this machine can run it."""
        return self.packed and self.torch.device(self.device).type == "cpu" and self.dtype == "bfloat16"

    def pin_threads(self) -> None:
        """Stop choosing threads per batch; run every batch on the usable cores from now on.

        Scores can differ in the last bits of fp32 between thread counts (small products and
        short attention split their sums differently), so jobs whose output must be reproducible
        byte for byte (eval runs, resumed or spread over Ray actors; teacher scores) pin them.
        """
        if self.governor is not None:
            self.torch.set_num_threads(self.governor.counts[0])
            self.governor = None

    def threads_described(self) -> dict[str, Any]:
        if self.governor is None:
            return {"threads": int(self.torch.get_num_threads()), "adaptive_threads": False}
        return {**self.governor.describe(), "adaptive_threads": True}

    def cpu_attention_described(self) -> dict[str, Any]:
        if not self._cpu_attention_applies():
            return {}
        from rerankd.backends.cpu_attention import status

        return {"cpu_attention": status().reason}

    def fp32_residual_described(self) -> dict[str, Any]:
        if not self.fp32_residual_norms:
            return {}
        from rerankd.backends.residual_fp32 import norm_kernel

        return {"fp32_residual_norms": self.fp32_residual_norms, "fp32_residual_norm_kernel": norm_kernel().reason}

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": self.device, "dtype": self.dtype, "dtype_choice": self.dtype_choice,
                "parameters": self.parameters, **self.threads_described(),
                "packed": self.packed, "attention": self.attention(), **self.cpu_attention_described(),
                "quantization": self.quantization,
                "onednn_linear_layers": self.onednn.layers,
                "onednn_fused_activations": self.onednn.fused_activations,
                **self.fp32_residual_described(),
                **({"allocator": self.allocator} if self.allocator else {}),
                **({"feature_cache_bytes": self.feature_cache.max_bytes if self.feature_cache else 0,
                    "blocked_vision_attention_layers": self.blocked_vision_attention}
                   if self.reads_media else {})}

    def stats(self) -> dict[str, Any]:
        """Runtime counters for ``/metrics``: the image-feature cache's (empty for text-only models)."""
        if not self.reads_media:
            return {}
        cache = self.feature_cache.stats() if self.feature_cache is not None else {}
        return {"feature_cache": cache, "vision_calls": getattr(self.module, "vision_calls", 0),
                "vision_items": getattr(self.module, "vision_items", 0)}


def follow_usable_cores(torch: Any) -> int:
    """Set torch's intra-op threads to the cores this process may use; returns the thread count.

    torch starts one thread per CPU it sees, which in a container given a 2-CPU quota on a 64-core
    host means 64 threads time-sliced onto 2 CPUs: every parallel region then waits for preempted
    threads. ``OMP_NUM_THREADS`` lowers the count. torch's current setting is not read: rerankd
    itself changes it per batch (``backends/threads.py``), so it says nothing about the machine.
    """
    from rerankd.hardware import cpu_info

    threads = cpu_info().usable_cores
    requested = os.environ.get("OMP_NUM_THREADS", "").strip()
    if requested.isdigit() and int(requested) > 0:
        threads = min(threads, int(requested))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def cpu_thread_governor(torch: Any, device: str, adaptive: bool) -> ThreadGovernor | None:
    """On CPU: threads capped at the usable cores, and (``adaptive``) chosen per batch by measurement."""
    if device != "cpu":
        return None
    threads = follow_usable_cores(torch)
    return ThreadGovernor(threads) if adaptive and threads > 1 else None
