"""Qwen3-VL's vision attention with its rotary embedding in cache-sized blocks: identical bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rerankd import Document
from rerankd.families import load_family
from tiny_models import requires_shared

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from rerankd.backends import vision_attention  # noqa: E402
from rerankd.backends.vision_attention import rotate_blocked  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [7, 256])
def test_blocked_rotation_is_transformers_rotation_bit_for_bit(dtype, rows: int) -> None:  # type: ignore[no-untyped-def]
    from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb_vision

    generator = torch.Generator().manual_seed(0)
    patches, heads, dim = 300, 4, 64
    qkv = (torch.randn(patches, 3, heads, dim, generator=generator) * 4).to(dtype)
    query, key, _ = qkv.permute(1, 0, 2, 3).unbind(0)  # strided views, as the model slices them
    angles = (torch.randn(patches, dim // 2, generator=generator) * 20).repeat(1, 2)
    cos, sin = angles.cos(), angles.sin()
    expected = apply_rotary_pos_emb_vision(query, key, cos, sin)
    got = (rotate_blocked(query, cos, sin, rows), rotate_blocked(key, cos, sin, rows))
    assert got[0].dtype == dtype
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def _engine_scores(model_dir: Path, images: list[Path], dtype: str) -> tuple[dict, np.ndarray]:
    from rerankd.backends.torch_backend import TorchBackend

    family = load_family(model_dir)
    backend = TorchBackend(family, device="cpu", dtype=dtype, feature_cache_bytes=0)
    documents = [Document.image(str(p)) for p in images] + [Document.of(Document.image(str(images[0])), Document.text("x"))]
    sequences = family.prepare(Document.text("a birthday cake"), documents).sequences
    return backend.describe(), backend.forward(sequences)


@requires_shared("tokenizers/qwen3", "data/coco-mini")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_vl_scores_are_identical_with_and_without_the_swap(qwen3_vl: Path, dtype: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from media_helpers import coco_images

    images = coco_images(3)
    info, swapped = _engine_scores(qwen3_vl, images, dtype)
    depth = load_family(qwen3_vl).config["vision_config"]["depth"]
    assert info["blocked_vision_attention_layers"] == depth
    monkeypatch.setattr(vision_attention, "use_blocked_vision_attention", lambda model: 0)
    info, plain = _engine_scores(qwen3_vl, images, dtype)
    assert info["blocked_vision_attention_layers"] == 0
    np.testing.assert_array_equal(swapped, plain)
    assert len(set(np.round(plain, 4))) > 2  # the images score differently


@requires_shared("tokenizers/qwen3")
def test_eager_vision_attention_is_left_alone(qwen3_vl: Path) -> None:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(qwen3_vl), attn_implementation="eager")
    assert vision_attention.use_blocked_vision_attention(model) == 0  # another kernel: not the same numbers
    sdpa = AutoModelForImageTextToText.from_pretrained(str(qwen3_vl), attn_implementation="sdpa")
    assert vision_attention.use_blocked_vision_attention(sdpa) == len(sdpa.model.visual.blocks)
