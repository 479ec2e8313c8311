"""Differences between the transformers versions rerankd declares, decided in one place.

Measured on 4.51.1, 4.51.3, 4.57.6 and 5.x (``tests/test_compat.py``; ``scripts/test_lowest.sh``
runs it on the lowest versions):

- ``from_pretrained`` takes ``dtype=`` from 4.56 on; before, the argument is ``torch_dtype=`` and an
  unknown ``dtype=`` reaches the model's constructor and raises there.
- Encoders (BERT, RoBERTa, XLM-R, ELECTRA...) call attention through the ``AttentionInterface``
  registry from 5.0 on only. Before, each layer's attention class is fixed when the model is built
  and a registered function is never called: packed sequences would attend to one another and every
  document of a batch would get about the same score. ``AttentionInterface`` itself exists on 4.51.
- Decoders (Qwen3, Qwen2, Llama, Mistral) use the registry on every declared version; before 4.53
  they build a dense (1, 1, T, T) causal mask for any attention name but sdpa and flash-attention
  (``_update_causal_mask``), from 4.53 an unknown name builds none.
"""

from __future__ import annotations

import functools
from typing import Any

#: Lowest transformers whose BERT-like encoders call the function registered for ``_attn_implementation``.
ENCODER_ATTENTION_REGISTRY_SINCE = (5, 0)


@functools.lru_cache(maxsize=1)
def transformers_version() -> tuple[int, int]:
    import transformers

    major, minor = transformers.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def dtype_kwarg(dtype: Any) -> dict[str, Any]:
    """``from_pretrained``'s precision argument: ``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    return {"dtype": dtype} if transformers_version() >= (4, 56) else {"torch_dtype": dtype}


def packing_supported(encoder: bool = False) -> bool:
    """Whether this transformers routes attention through ``AttentionInterface`` (for an encoder, or a decoder)."""
    try:
        from transformers import AttentionInterface  # noqa: F401
    except ImportError:
        return False
    return not encoder or transformers_version() >= ENCODER_ATTENTION_REGISTRY_SINCE
