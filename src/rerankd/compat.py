"""Differences between the transformers versions rerankd declares, decided in one place."""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=1)
def transformers_version() -> tuple[int, int]:
    import transformers

    major, minor = transformers.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def dtype_kwarg(dtype: Any) -> dict[str, Any]:
    """``from_pretrained``'s precision argument: ``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    return {"dtype": dtype} if transformers_version() >= (4, 56) else {"torch_dtype": dtype}


def packing_supported() -> bool:
    """Whether this transformers routes encoder and decoder attention through ``AttentionInterface``."""
    try:
        from transformers import AttentionInterface  # noqa: F401
    except ImportError:
        return False
    return True
