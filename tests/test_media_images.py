"""Images reach the vision tower exactly as the Qwen3-VL reference prepares them.

Oracle: transformers' Qwen2VLImageProcessor (its Pillow/numpy implementation, no torchvision) set up
as Qwen3-VL's: patch 16, merge 2, temporal 2, mean/std 0.5, 4·32² … 1800·32² pixels.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest

from media_helpers import coco_images, png_claiming
from rerankd.errors import MediaError, MediaTooLargeError
from rerankd.media.fetch import MediaPolicy

Image = pytest.importorskip("PIL.Image")

from rerankd.media.images import (  # noqa: E402
    QWEN3_VL,
    VisionConfig,
    image_token_count,
    load_image,
    preprocess_image,
    resize_image,
    smart_resize,
    stack_visual,
    to_rgb,
)

POLICY = MediaPolicy.permissive()


@pytest.fixture(scope="module")
def processor():  # type: ignore[no-untyped-def]
    pytest.importorskip("transformers")
    try:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil as Processor
    except ImportError:  # transformers 4.x: the slow processor is the Pillow/numpy one
        from transformers import Qwen2VLImageProcessor as Processor
    return Processor(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                     min_pixels=4 * 32 * 32, max_pixels=1800 * 32 * 32)


def test_coco_640x422_becomes_260_tokens() -> None:
    path = next(p for p in coco_images() if p.name == "000000000790.jpg")
    image = load_image(str(path), policy=POLICY)
    assert image.size == (640, 422)
    assert resize_image(image).size == (640, 416)
    item = preprocess_image(image)
    assert item.grid_thw == (1, 26, 40)
    assert item.num_tokens == 260 == image_token_count(422, 640)
    assert item.pixel_values.shape == (26 * 40, 3 * 2 * 16 * 16) and item.pixel_values.dtype == np.float32


def test_matches_the_processor_on_coco_images(processor) -> None:  # type: ignore[no-untyped-def]
    for path in coco_images(5):
        image = load_image(path, policy=POLICY)
        mine = preprocess_image(image)
        # the processor resizing the original, and (as the reference calls it) only normalizing ours
        for expected in (processor(images=[image], return_tensors="np"),
                         processor(images=[resize_image(image)], do_resize=False, return_tensors="np")):
            assert [tuple(g) for g in expected["image_grid_thw"].tolist()] == [mine.grid_thw]
            assert expected["pixel_values"].shape == mine.pixel_values.shape
            np.testing.assert_allclose(mine.pixel_values, expected["pixel_values"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [(1, 1), (33, 47), (17, 31), (40, 5000), (100, 7000), (2000, 1500)])
def test_matches_the_processor_on_odd_sizes(processor, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    mine = preprocess_image(image)
    expected = processor(images=[image], return_tensors="np")
    assert tuple(expected["image_grid_thw"][0].tolist()) == mine.grid_thw
    np.testing.assert_allclose(mine.pixel_values, expected["pixel_values"], rtol=0, atol=1e-6)


def test_several_images_stack_like_a_processor_batch(processor) -> None:  # type: ignore[no-untyped-def]
    images = [load_image(p, policy=POLICY) for p in coco_images(3)]
    pixel_values, grid = stack_visual([preprocess_image(im) for im in images])
    expected = processor(images=images, return_tensors="np")
    np.testing.assert_array_equal(grid, expected["image_grid_thw"])
    np.testing.assert_allclose(pixel_values, expected["pixel_values"], rtol=0, atol=1e-6)


def test_smart_resize_is_qwen_vl_utils_variant() -> None:
    assert smart_resize(422, 640) == (416, 640)
    assert smart_resize(10, 10) == (64, 64)  # grown to the 4·32² minimum
    h, w = smart_resize(4000, 3000)
    assert h * w <= 1800 * 32 * 32 and h % 32 == w % 32 == 0
    # a side rounding to 0 is lifted to one factor first (transformers' version would grow the image instead)
    assert smart_resize(15, 3000) == (32, 3008)
    with pytest.raises(MediaError, match=r"document 2: the image is 3000×10, an aspect ratio of 300:1, but the limit is 200:1"):
        smart_resize(10, 3000, where=2)


def test_rgb_conversion_follows_the_reference() -> None:
    rgba = Image.new("RGBA", (2, 1), (10, 20, 30, 255))
    rgba.putpixel((1, 0), (10, 20, 30, 0))
    assert list(to_rgb(rgba).getdata()) == [(10, 20, 30), (255, 255, 255)]  # composited on white
    # other modes are converted as qwen_vl_utils.to_rgb does: transparency is not composited
    la = Image.new("LA", (1, 1), (77, 0))
    assert to_rgb(la).getpixel((0, 0)) == (77, 77, 77)
    palette = Image.new("P", (1, 1), 0)
    palette.putpalette([5, 6, 7] + [0] * 765)
    palette.info["transparency"] = 0
    assert to_rgb(palette).getpixel((0, 0)) == (5, 6, 7)
    for mode in ("1", "L", "I", "F", "CMYK", "YCbCr", "I;16"):
        assert to_rgb(Image.new(mode, (3, 2))).mode == "RGB"


def test_every_source_kind_loads(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (20, 10), (0, 128, 255, 255)).save(buffer, format="PNG")
    data = buffer.getvalue()
    path = tmp_path / "a.png"
    path.write_bytes(data)
    sources = [str(path), path, f"file://{path}", data, "data:image/png;base64," + base64.b64encode(data).decode(),
               Image.open(io.BytesIO(data))]
    for source in sources:
        image = load_image(source, policy=POLICY)
        assert image.mode == "RGB" and image.size == (20, 10) and image.getpixel((3, 3)) == (0, 128, 255)


def test_broken_files_have_clean_messages(tmp_path: Path) -> None:
    jpeg = coco_images(1)[0].read_bytes()
    with pytest.raises(MediaError, match=r"^document 1: the image data is truncated or corrupt$"):
        load_image(jpeg[: len(jpeg) // 3], policy=POLICY, where=1)
    with pytest.raises(MediaError, match=r"^document 1: the image is not in a supported image format \(JPEG, PNG, GIF"):
        load_image(b"<html>not an image</html>", policy=POLICY, where=1)
    eps = io.BytesIO()
    Image.new("RGB", (8, 8)).save(eps, format="EPS")  # Pillow would start Ghostscript to decode it
    with pytest.raises(MediaError, match=r"not in a supported image format"):
        load_image(eps.getvalue(), policy=POLICY, where=1)
    with pytest.raises(MediaTooLargeError, match=r"^the query: the image is 9000×9000 = 81,000,000 pixels but the limit "
                                                 r"is 1,000,000 pixels$"):
        load_image(png_claiming(9000, 9000), policy=MediaPolicy(max_pixels=10**6), where="the query")
    with pytest.raises(MediaTooLargeError, match=r"the image is 2000×1000 = 2,000,000 pixels"):
        load_image(Image.new("RGB", (2000, 1000)), policy=MediaPolicy(max_pixels=10**6))


def test_config_from_a_preprocessor_config() -> None:
    qwen3_vl = {"image_processor_type": "Qwen2VLImageProcessorFast", "patch_size": 16, "temporal_patch_size": 2,
                "merge_size": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                "size": {"longest_edge": 16777216, "shortest_edge": 65536}}
    assert VisionConfig.from_preprocessor_config(qwen3_vl) == QWEN3_VL
    qwen2_vl = VisionConfig.from_preprocessor_config({"patch_size": 14}, min_pixels=4 * 28 * 28, max_pixels=1280 * 28 * 28)
    assert qwen2_vl.factor == 28
    assert preprocess_image(Image.new("RGB", (56, 56)), qwen2_vl).pixel_values.shape == (16, 3 * 2 * 14 * 14)
