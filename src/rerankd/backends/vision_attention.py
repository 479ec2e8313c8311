"""Qwen3-VL's vision attention on CPU with its rotary embedding in cache-sized blocks, bit for bit.

transformers' ``Qwen3VLVisionAttention`` rotates the queries and keys of every patch of a batch in
fp32: upcast, ``x * cos``, ``cat(-x2, x1)`` (a copy), ``* sin``, add, downcast — each a pass over a
patches × 1024 tensor (25 MB in fp32 for six COCO images), and then joins the per-image attention
outputs with another copy. On 2 CPU cores those passes took ~27% of a Qwen3-VL-2B image pair
(``torch.profiler``, 6 images: 2.0 of 7.5 s). :class:`BlockedVisionAttention` runs the same
arithmetic on blocks of 256 patches that stay in cache, on the two halves directly
(``x1*c1 - x2*s1`` is ``x1*c1 + (-x2)*s1`` exactly: negation is exact and ``a - b`` is ``a + (-b)``),
and writes each image's attention into one output. Each swap is checked at load against the module
it replaces on random inputs and kept only if every output is identical (``torch.equal``).
"""

from __future__ import annotations

from typing import Any

from rerankd._optional import require
from rerankd.backends.cpu_attention import torch_sdpa_only
from rerankd.backends.packed import sdpa_per_sequence

torch = require("torch")
nn = torch.nn

#: Patches per block: 256 × 16 heads × 64 dims of fp32 is 1 MiB, an L2's size.
BLOCK_ROWS = 256


def rotate_blocked(x: Any, cos: Any, sin: Any, rows: int = BLOCK_ROWS) -> Any:
    """``apply_rotary_pos_emb_vision`` for one tensor: x (patches, heads, dim), cos/sin (patches, dim).

    Example:
        >>> x = torch.randn(5, 2, 8); c, s = torch.randn(5, 8), torch.randn(5, 8)
        >>> y = rotate_blocked(x, c, s)
        >>> torch.equal(y, x * c[:, None] + torch.cat((-x[..., 4:], x[..., :4]), -1) * s[:, None])
        True
    """
    half = x.shape[-1] // 2
    cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], rows):
        block = x[start:start + rows].float()
        c, s = cos[start:start + rows], sin[start:start + rows]
        first, second = block[..., :half], block[..., half:]
        out[start:start + rows, :, :half] = first * c[..., :half] - second * s[..., :half]
        out[start:start + rows, :, half:] = second * c[..., half:] + first * s[..., half:]
    return out


class BlockedVisionAttention(nn.Module):
    """A ``Qwen3VLVisionAttention`` (SDPA, one image per ``cu_seqlens`` span) computed as above.

    Shares the original's ``qkv`` and ``proj`` layers (whatever they became: oneDNN layers included).
    """

    def __init__(self, original: Any) -> None:
        super().__init__()
        self.qkv = original.qkv
        self.proj = original.proj
        self.num_heads = int(original.num_heads)
        self.scaling = float(original.scaling)

    def forward(self, hidden_states: Any, cu_seqlens: Any, rotary_pos_emb: Any = None,
                position_embeddings: Any = None, **kwargs: Any) -> Any:
        # transformers 4.57 also passes the raw angles (rotary_pos_emb); cos and sin are what is used.
        if position_embeddings is None:  # every transformers with Qwen3-VL (4.57 on) passes them
            raise RuntimeError("the vision attention was called without position_embeddings (cos, sin)")
        patches = hidden_states.shape[0]
        query, key, value = self.qkv(hidden_states).reshape(patches, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        cos, sin = position_embeddings
        query, key = rotate_blocked(query, cos, sin), rotate_blocked(key, cos, sin)
        query, key, value = (t.transpose(0, 1).unsqueeze(0) for t in (query, key, value))  # (1, heads, patches, dim)
        # Each image attends to itself, as the packed text path's sequences do: one output, no cat.
        out = sdpa_per_sequence(query, key, value, cu_seqlens.tolist(), False, self.scaling)
        return self.proj(out.reshape(patches, -1))


def _probe_equal(original: Any, blocked: BlockedVisionAttention) -> bool:
    """Both modules on two random images (random rotary angles): identical outputs?"""
    weight = next(original.parameters(), None)
    if weight is None:
        return False
    generator = torch.Generator().manual_seed(0)
    dim = original.qkv.in_features if hasattr(original.qkv, "in_features") else original.dim
    head_dim = dim // blocked.num_heads
    hidden = torch.randn(96, dim, generator=generator).to(weight.dtype)
    angles = torch.randn(96, head_dim // 2, generator=generator).repeat(1, 2)
    embeddings = (angles.cos(), angles.sin())
    cu_seqlens = torch.tensor([0, 40, 96], dtype=torch.int32)
    with torch.inference_mode():
        try:
            expected = original(hidden, cu_seqlens=cu_seqlens, position_embeddings=embeddings)
            with torch_sdpa_only():  # the rotation is what is compared: both on torch's attention
                got = blocked(hidden, cu_seqlens=cu_seqlens, position_embeddings=embeddings)
        except (TypeError, RuntimeError):  # another transformers' signature: keep the original
            return False
    return bool(torch.equal(expected, got))


def use_blocked_vision_attention(model: Any) -> int:
    """Swap ``model``'s CPU ``Qwen3VLVisionAttention`` modules (SDPA) for :class:`BlockedVisionAttention`.

    Returns how many were swapped. The first module found is probed; if it differs, none is swapped
    (they all run the same code).
    """
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child).__name__ != "Qwen3VLVisionAttention":
                continue
            config = getattr(child, "config", None)
            weight = next(child.parameters(), None)
            if getattr(config, "_attn_implementation", "sdpa") != "sdpa" or weight is None or weight.device.type != "cpu":
                continue
            blocked = BlockedVisionAttention(child)
            if swapped == 0 and not _probe_equal(child, blocked):
                return 0
            setattr(module, name, blocked)
            swapped += 1
    return swapped
