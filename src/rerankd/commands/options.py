"""Options shared by the subcommands that load a model."""

from __future__ import annotations

import argparse
from typing import Any

#: --packed on the command line → Reranker.from_pretrained(packed=...).
_PACKED = {"auto": None, "on": True, "off": False}


def add_model_options(parser: argparse.ArgumentParser, *, model_help: str | None = None) -> None:
    from rerankd.gpu_quantization import QUANTIZATIONS
    from rerankd.memory_plan import TIERS

    parser.add_argument("--model", "-m", default=None, help=model_help or "model directory or hub id (default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on GPUs that have it, fp16 on other GPUs and MPS), "
                                                        "fp32, bf16 or fp16")
    parser.add_argument("--backend", default="torch", help="inference backend (torch, onnx)")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per pair (documents are truncated to fit)")
    parser.add_argument("--batch-tokens", type=int, default=None,
                        help="tokens per forward pass (default: 4096 on CPU; on CUDA planned from free memory)")
    parser.add_argument("--max-memory", default=None, metavar="SIZE",
                        help="memory budget per model (e.g. 2.5GB): the default precision/backend is chosen to fit it")
    gpu = parser.add_argument_group("GPU (torch backend)")
    gpu.add_argument("--quantization", default=None, choices=list(QUANTIZATIONS),
                     help="quantized weights on CUDA (score head kept in full precision)")
    gpu.add_argument("--memory-tier", default="off", choices=list(TIERS),
                     help="auto: pick precision, quantization and batch budget from the model's size and the GPU's "
                          "free memory; 24gb/16gb/12gb: plan as if the GPU had that much")
    gpu.add_argument("--gpu-memory-fraction", type=float, default=None,
                     help="share of the GPU's memory the model may plan for (default 0.9)")
    gpu.add_argument("--packed", default="auto", choices=list(_PACKED),
                     help="unpadded batches: auto packs on CPU only; on also packs on CUDA (varlen attention, not "
                          "yet verified on a GPU)")


def load_reranker(args: argparse.Namespace, model: str | None = None) -> Any:
    from rerankd.engine import Reranker

    return Reranker.from_pretrained(
        model if model is not None else args.model,
        revision=args.revision,
        device=args.device,
        dtype=args.dtype,
        backend=args.backend,
        max_length=args.max_length,
        batch_tokens=args.batch_tokens,
        max_memory=getattr(args, "max_memory", None),
        quantization=args.quantization,
        memory_tier=args.memory_tier,
        gpu_memory_fraction=args.gpu_memory_fraction,
        packed=_PACKED[args.packed],
    )
