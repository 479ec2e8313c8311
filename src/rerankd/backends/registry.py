"""Backends by name. Each is imported only when asked for, so its heavy dependency stays optional."""

from __future__ import annotations

import importlib
from typing import Any

from rerankd.backends.base import Backend
from rerankd.errors import InputError
from rerankd.families import Family

#: name → "module:class". A backend's constructor takes (family, device=..., dtype=...).
BACKENDS: dict[str, str] = {
    "torch": "rerankd.backends.torch_backend:TorchBackend",
    "onnx": "rerankd.backends.onnx_backend:OnnxBackend",
    "torch-int8": "rerankd.backends.torch_int8:TorchInt8Backend",
    # Not a backend of its own: the measured fastest one for this model and machine (rerankd.tuning).
    "auto": "rerankd.tuning:auto_backend",
}


def create_backend(name: str, family: Family, **options: Any) -> Backend:
    """Build the backend called ``name`` for ``family``."""
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    module_name, class_name = BACKENDS[name].split(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    return backend_class(family, **options)
