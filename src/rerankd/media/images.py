"""Images for Qwen-VL vision towers: load safely, resize, normalize and patchify exactly like the reference.

The reference (QwenLM/Qwen3-VL-Embedding ``qwen3_vl_reranker.py``) loads and resizes images with
``qwen_vl_utils.fetch_image`` (PyPI 0.0.14): RGBA is composited on white, anything else converted
to RGB; ``smart_resize`` picks a size that is a multiple of 32 (patch 16 × merge 2) with
4·32² … 1800·32² pixels; Pillow resizes with its default (bicubic) filter. The processor is then
called with ``do_resize=False``, so it only rescales, normalizes ((x/255 − 0.5)/0.5) and patchifies:
each image is repeated into ``temporal_patch_size`` frames and cut into 16×16 patches ordered so that
every 2×2 block of patches the merger joins is contiguous. This module does the same with Pillow and
numpy (torchvision, which the transformers fast processors and qwen_vl_utils need, is not required).

Example:
    >>> from PIL import Image
    >>> item = preprocess_image(Image.new("RGB", (640, 422)))
    >>> item.grid_thw, item.num_tokens, item.pixel_values.shape
    ((1, 26, 40), 260, (1040, 1536))
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

import numpy as np

from rerankd._optional import require
from rerankd.errors import MediaError, MediaTooLargeError
from rerankd.media.fetch import MediaPolicy, Where, read_media, subject

if TYPE_CHECKING:
    from PIL import Image as PILImage

#: An image as callers give it: a local path, bytes, a PIL image, a ``data:`` URI or an http(s) URL.
ImageSource = Union[str, "os.PathLike[str]", bytes, "PILImage.Image"]

#: qwen_vl_utils: no side may be more than 200 times the other.
MAX_ASPECT_RATIO = 200

#: The image formats decoded from untrusted bytes: the web's and cameras' formats. Pillow can open
#: more, but some run external programs (EPS starts Ghostscript) or rarely-audited decoders.
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "DIB", "TIFF", "PPM", "TGA", "ICO", "AVIF")


@dataclass(frozen=True)
class VisionConfig:
    """How a Qwen-VL vision tower wants its pixels, and the reranker's image size bounds.

    ``patch_size``, ``merge_size``, ``temporal_patch_size``, ``image_mean`` and ``image_std`` come from
    the model's ``preprocessor_config.json``; ``min_pixels`` / ``max_pixels`` are the reranker's own
    (``MIN_PIXELS`` / ``MAX_PIXELS`` in the reference), not the preprocessor's ``size``, which the
    reference bypasses with ``do_resize=False``.
    """

    patch_size: int = 16
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 4 * 32 * 32
    max_pixels: int = 1800 * 32 * 32
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def factor(self) -> int:
        """Sides of a resized image are multiples of this (patch × merge: 32 for Qwen3-VL)."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_preprocessor_config(cls, config: Mapping[str, Any], **overrides: Any) -> VisionConfig:
        """Read patch, merge, temporal patch, mean and std from a model's ``preprocessor_config.json``.

        Example:
            >>> VisionConfig.from_preprocessor_config({"patch_size": 14, "image_mean": [0.5, 0.5, 0.5]}).factor
            28
        """
        fields: dict[str, Any] = {}
        for key in ("patch_size", "merge_size", "temporal_patch_size"):
            if key in config:
                fields[key] = int(config[key])
        for key in ("image_mean", "image_std"):
            if key in config:
                value = config[key]
                fields[key] = tuple(float(v) for v in (value if isinstance(value, Sequence) else [value] * 3))
        fields.update(overrides)
        return cls(**fields)


#: Qwen3-VL-Reranker (2B and 8B): patch 16, merge 2, temporal 2, mean/std 0.5, 4·32² … 1800·32² pixels.
QWEN3_VL = VisionConfig()


@dataclass(frozen=True)
class ProcessedImage:
    """One image ready for the vision tower, in the processor's flattened layout.

    Attributes:
        pixel_values: float32, ``(t·h·w, channels·temporal_patch·patch·patch)``: one row per patch.
        grid_thw: ``(t, h, w)`` in patches, as the processor's ``image_grid_thw`` row.
        merge_size: patches merged per side into one token.
    """

    pixel_values: np.ndarray
    grid_thw: tuple[int, int, int]
    merge_size: int

    @property
    def num_tokens(self) -> int:
        """Image pad tokens in the prompt: t·h·w / merge²."""
        t, h, w = self.grid_thw
        return t * h * w // (self.merge_size * self.merge_size)


def _pil() -> Any:
    return require("PIL.Image")


def _check_pixels(width: int, height: int, policy: MediaPolicy, where: Where, what: str = "image") -> None:
    if width * height > policy.max_pixels:
        raise MediaTooLargeError(
            f"{subject(where)}the {what} is {width}×{height} = {width * height:,} pixels but the limit is "
            f"{policy.max_pixels:,} pixels"
        )


def to_rgb(image: PILImage.Image, where: Where = None) -> PILImage.Image:
    """RGB as the reference makes it: RGBA composited on white, every other mode converted to RGB.

    Only RGBA is composited: a palette image with a transparent colour or an LA image keeps the
    colour under its transparency, as ``qwen_vl_utils.to_rgb`` does (scores must match it).

    Example:
        >>> from PIL import Image
        >>> to_rgb(Image.new("RGBA", (1, 1), (0, 0, 0, 0))).getpixel((0, 0))
        (255, 255, 255)
    """
    Image = _pil()
    try:
        if image.mode == "RGBA":
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image, mask=image.split()[3])
            return background
        return image.convert("RGB")
    except Exception:  # noqa: BLE001 - a hostile file may fail anywhere inside a decoder; say so plainly
        raise MediaError(f"{subject(where)}the image (mode {image.mode}) could not be converted to RGB") from None


def decode_image(data: bytes | Path, *, policy: MediaPolicy, where: Where = None, what: str = "image") -> PILImage.Image:
    """Decode image bytes or a checked file to RGB, refusing oversized images before decoding pixels.

    ``Image.open`` reads only the header; the pixel cap is checked on that size, then ``load()``
    decodes. Pillow's own bomb check (``Image.MAX_IMAGE_PIXELS``) is left as it is — a process-wide
    setting is not ours to change — and its error is reported as the same :class:`MediaTooLargeError`.
    """
    Image = _pil()
    Image.init()
    formats = [f for f in IMAGE_FORMATS if f in Image.OPEN]
    try:
        opened = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data, formats=formats)
    except Image.DecompressionBombError as exc:
        # Pillow refused first (its threshold is below our cap); its message carries the pixel count
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "more pixels than Pillow's decompression-bomb limit"
        raise MediaTooLargeError(
            f"{subject(where)}the {what} is {size} but the limit is {policy.max_pixels:,} pixels"
        ) from None
    except Exception:  # noqa: BLE001
        raise MediaError(
            f"{subject(where)}the {what} is not in a supported image format ({', '.join(formats)})"
        ) from None
    with opened:
        width, height = opened.size
        _check_pixels(width, height, policy, where, what)
        try:
            opened.load()
        except Exception:  # noqa: BLE001
            raise MediaError(f"{subject(where)}the {what} data is truncated or corrupt") from None
        return to_rgb(opened, where)


def load_image(source: ImageSource, *, policy: MediaPolicy, where: Where = None, what: str = "image") -> PILImage.Image:
    """Any image source to an RGB PIL image, under ``policy`` (fetch rules, byte and pixel caps).

    Args:
        source: a path (``str``/``Path``/``file://``), bytes, a PIL image, a ``data:`` URI or an http(s) URL.
        policy: where media may come from; ``MediaPolicy.permissive()`` for the Python API.
        where: the query or document it belongs to, named in error messages.
        what: how messages call it (``"image"``, ``"frame 3"``).

    Example:
        >>> from PIL import Image
        >>> load_image(Image.new("LA", (4, 2)), policy=MediaPolicy()).mode
        'RGB'
    """
    Image = _pil()
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, policy, where, what)
        return to_rgb(source, where)
    data = read_media(source, kind="image", policy=policy, where=where)
    return decode_image(data, policy=policy, where=where, what=what)


def smart_resize(height: int, width: int, factor: int = 32, min_pixels: int = 4 * 32 * 32,
                 max_pixels: int = 1800 * 32 * 32, *, where: Where = None) -> tuple[int, int]:
    """The (height, width) qwen_vl_utils resizes to: multiples of ``factor``, pixels within bounds.

    Sides are rounded to the nearest multiple (at least one ``factor``); if the area is then over
    ``max_pixels`` both sides shrink by the same ratio and round down, if under ``min_pixels`` they grow
    and round up. This is qwen_vl_utils' variant (the reference's), which differs from transformers'
    ``smart_resize`` only for extreme aspect ratios, where a side would round to 0.

    Raises:
        MediaError: a side is 0 or one side is more than 200 times the other.

    Example:
        >>> smart_resize(422, 640)
        (416, 640)
    """
    if max_pixels < min_pixels:
        raise ValueError(f"max_pixels ({max_pixels}) must be at least min_pixels ({min_pixels})")
    if height < 1 or width < 1:
        raise MediaError(f"{subject(where)}the image is {width}×{height}; both sides must be at least 1 pixel")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise MediaError(
            f"{subject(where)}the image is {width}×{height}, an aspect ratio of "
            f"{max(height, width) / min(height, width):.0f}:1, but the limit is {MAX_ASPECT_RATIO}:1"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    if h_bar < factor or w_bar < factor:
        # qwen_vl_utils would go on with a 0-pixel side and fail later inside Pillow
        raise MediaError(
            f"{subject(where)}the image is {width}×{height}; at most {max_pixels:,} pixels it cannot keep "
            f"both sides at {factor} pixels or more"
        )
    return h_bar, w_bar


def resize_image(image: PILImage.Image, *, factor: int = 32, min_pixels: int = 4 * 32 * 32,
                 max_pixels: int = 1800 * 32 * 32, where: Where = None) -> PILImage.Image:
    """Resize an RGB image to its :func:`smart_resize` size with Pillow's bicubic filter (fetch_image)."""
    Image = _pil()
    height, width = smart_resize(image.height, image.width, factor, min_pixels, max_pixels, where=where)
    return image.resize((width, height), Image.Resampling.BICUBIC)


def normalize(frames: np.ndarray, config: VisionConfig = QWEN3_VL) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` frames to float32 ``(T, 3, H, W)``: (x − 255·mean) / (255·std).

    Rescale and normalize fused into one step as transformers' fast processors do it; with mean and
    std 0.5 that is (x − 127.5) / 127.5, the correctly rounded float32 of (x/255 − 0.5)/0.5.
    """
    mean = np.asarray([m * 255.0 for m in config.image_mean], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray([s * 255.0 for s in config.image_std], dtype=np.float32).reshape(1, 3, 1, 1)
    chw = np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32)
    return (chw - mean) / std


def patchify(frames: np.ndarray, config: VisionConfig = QWEN3_VL) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Float ``(T, C, H, W)`` frames to the processor's flat patches and their ``(t, h, w)`` grid.

    T is padded to a multiple of ``temporal_patch_size`` by repeating the last frame (as
    Qwen3VLVideoProcessor does). Rows are ordered (t, h/merge, w/merge, merge_h, merge_w): the
    ``merge²`` patches one token is made of are adjacent; each row is (C, temporal, patch, patch).
    """
    tp, p, m = config.temporal_patch_size, config.patch_size, config.merge_size
    if pad := -frames.shape[0] % tp:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)], axis=0)
    t, c, h, w = frames.shape
    if h % (p * m) or w % (p * m):
        raise ValueError(f"frames of {h}×{w} are not multiples of patch × merge = {p * m}")
    gt, gh, gw = t // tp, h // p, w // p
    patches = frames.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return np.ascontiguousarray(patches.reshape(gt * gh * gw, c * tp * p * p)), (gt, gh, gw)


def preprocess_image(image: PILImage.Image, config: VisionConfig = QWEN3_VL, *, where: Where = None) -> ProcessedImage:
    """An RGB image (from :func:`load_image`) to what the vision tower reads, as the reference makes it.

    Example:
        >>> from PIL import Image
        >>> preprocess_image(Image.new("RGB", (33, 47))).grid_thw
        (1, 6, 4)
    """
    resized = resize_image(image, factor=config.factor, min_pixels=config.min_pixels,
                           max_pixels=config.max_pixels, where=where)
    frames = np.asarray(resized, dtype=np.uint8)[None]
    pixel_values, grid = patchify(np.repeat(normalize(frames, config), config.temporal_patch_size, axis=0), config)
    return ProcessedImage(pixel_values=pixel_values, grid_thw=grid, merge_size=config.merge_size)


def image_token_count(height: int, width: int, config: VisionConfig = QWEN3_VL) -> int:
    """Image pad tokens an image of this size costs, without decoding it (for planning by cost).

    Example:
        >>> image_token_count(422, 640)
        260
    """
    h, w = smart_resize(height, width, config.factor, config.min_pixels, config.max_pixels)
    return (h // config.patch_size) * (w // config.patch_size) // (config.merge_size**2)


def stack_visual(items: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate processed images (or videos) into the processor's batch arrays.

    Returns:
        ``pixel_values`` (float32, all rows in order) and ``grid_thw`` (int64, one row per item), i.e.
        ``pixel_values``/``image_grid_thw`` (or ``pixel_values_videos``/``video_grid_thw``).
    """
    if not items:
        raise ValueError("stack_visual needs at least one item")
    return (
        np.concatenate([item.pixel_values for item in items], axis=0),
        np.asarray([item.grid_thw for item in items], dtype=np.int64),
    )
