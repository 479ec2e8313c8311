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
    parser.add_argument("--max-length", type=int, default=None,
                        help="tokens per pair (documents are truncated to fit; default: the model's own, e.g. a saved "
                             "student's; LLM and vision-language rerankers at most 8192 / 10240)")
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


def load_options(args: argparse.Namespace, model: str | None = None) -> dict[str, Any]:
    """:meth:`Reranker.from_pretrained`'s arguments from the model options (also what a Ray worker loads with)."""
    return {"model": model if model is not None else args.model, "revision": args.revision, "device": args.device,
            "dtype": args.dtype, "backend": args.backend, "max_length": args.max_length,
            "batch_tokens": args.batch_tokens, "max_memory": getattr(args, "max_memory", None),
            "quantization": getattr(args, "quantization", None), "memory_tier": getattr(args, "memory_tier", None),
            "gpu_memory_fraction": getattr(args, "gpu_memory_fraction", None),
            "packed": _PACKED[getattr(args, "packed", "auto")]}


def load_reranker(args: argparse.Namespace, model: str | None = None, **extra: Any) -> Any:
    """The reranker the model options name; ``extra`` goes to :meth:`Reranker.from_pretrained` as is."""
    from rerankd.engine import Reranker

    options = {**load_options(args, model), **extra}
    return Reranker.from_pretrained(options.pop("model"), **options)


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Where the chunks are scored: here, or on Ray Data (``--engine ray``)."""
    group = parser.add_argument_group("engine (rerankd[ray] for --engine ray)")
    group.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="local: this process; ray: Ray Data actors (a local Ray, or the cluster at RAY_ADDRESS)")
    group.add_argument("--concurrency", type=int, default=1, help="Ray actors scoring at once (each loads the model)")
    group.add_argument("--actor-cpus", type=float, default=1.0, help="CPUs per Ray actor (= its torch threads)")
    group.add_argument("--actor-gpus", type=float, default=0.0, help="GPUs per Ray actor")
    group.add_argument("--ray-address", default=None, help="Ray cluster to join (default $RAY_ADDRESS, else a local Ray)")


def chunk_engine(args: argparse.Namespace, model: str | None = None) -> Any:
    """``None`` (score here) or the Ray Data engine the options describe."""
    if args.engine == "local":
        return None
    from rerankd.ray.data import RayDataEngine

    return RayDataEngine(load_options(args, model), concurrency=args.concurrency, actor_cpus=args.actor_cpus,
                         actor_gpus=args.actor_gpus, address=args.ray_address, progress=not args.no_progress)
