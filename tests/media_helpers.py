"""Media made at test time: a PNG that claims a huge size, small videos written with PyAV, COCO paths."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini" / "images"


def coco_images(n: int | None = None) -> list[Path]:
    """The COCO-mini JPEGs (sorted); skips the test when ../shared is absent."""
    if not COCO.is_dir():
        pytest.skip(f"needs the COCO-mini images in {COCO} (../shared/data/coco-mini)")
    paths = sorted(COCO.glob("*.jpg"))
    return paths if n is None else paths[:n]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A ~70-byte PNG whose header says ``width × height`` RGB pixels: a decompression bomb's shape.

    Its only data block holds one row, so decoding it would allocate the full image and then fail;
    a loader that checks the header first refuses it without allocating anything.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\x00" + b"\x00" * 3 * min(width, 16))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", row) + _chunk(b"IEND", b"")


def frame_colour(i: int) -> tuple[int, int, int]:
    """The solid colour of frame ``i`` in :func:`write_video`: it tells which frames were sampled."""
    return (i * 8 % 256, 255 - i * 8 % 256, 128)


def write_video(path: Path, *, frames: int = 30, fps: int = 10, size: tuple[int, int] = (64, 48),
                codec: str = "ffv1", pix_fmt: str = "bgr0") -> Path:
    """Write ``frames`` solid-colour frames at ``fps`` with PyAV (ffv1 in Matroska is lossless)."""
    av = pytest.importorskip("av")
    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for i in range(frames):
            image = np.empty((height, width, 3), np.uint8)
            image[...] = frame_colour(i)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
