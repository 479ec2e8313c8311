"""Videos for Qwen3-VL: sample frames, size them and write their timestamps exactly as the reference does.

The reference reranker hands videos to ``qwen_vl_utils.fetch_video`` (PyPI 0.0.14) and the result
to ``Qwen3VLProcessor`` with ``do_resize=False`` and ``do_sample_frames=False``; both import
torchvision, so this module redoes their arithmetic with PyAV, numpy and (for the resize) torch.

A video **file** (path, URL, data URI or bytes) is sampled at ``fps`` (1 by default):
``n = floor_even(clamp(frames / video_fps · fps, 4, max_frames, frames))`` frames at
``round(linspace(0, frames − 1, n))``. A **frame list** is first cut to ``max_frames`` entries by
``linspace(0, len − 1, max_frames)`` truncated to int, each frame is loaded and resized like an image
but to multiples of 64 (0.0.14 passes the image factor where the patch size belongs), and the list is
padded to an even length by repeating its last frame.

Every frame of a video is then resized to one size: ``smart_resize`` with at least 128·32² pixels and
at most ``max(min(768·32², total_pixels / n · 2), 1.05 · 128·32²)``, where ``total_pixels`` is
128000·32²·0.9 for files and the reranker's 10·768·32² for frame lists; the resize is torchvision's
(bicubic with antialias on float32, clamped and rounded). Pairs of frames form one temporal patch; the
prompt gives each pair the mean time of its two frames, ``<{t:.1f} seconds>``, where t is
``index / fps`` with the file's average fps — and 2.0 for frame lists, whose indices are 0, 1, 2, …

Example:
    >>> from PIL import Image
    >>> frames = [Image.new("RGB", (64, 48), (i, 0, 0)) for i in range(3)]
    >>> video = video_from_frames(frames, policy=MediaPolicy.permissive())
    >>> video.grid_thw, video.timestamps, video.prompt()[:29]
    ((2, 20, 28), (0.25, 1.25), '<0.2 seconds><|vision_start|>')
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence, TypeVar

import numpy as np

from rerankd._optional import require
from rerankd.errors import MediaError, MediaTooLargeError
from rerankd.media.fetch import MediaPolicy, Where, read_media, subject
from rerankd.media.images import QWEN3_VL, ImageSource, VisionConfig, load_image, normalize, patchify, resize_image, smart_resize

if TYPE_CHECKING:
    import os

log = logging.getLogger(__name__)

#: qwen_vl_utils: frames come in pairs (one temporal patch) and a file video gets at least 4 of them.
FRAME_FACTOR = 2
FPS_MIN_FRAMES = 4
#: qwen_vl_utils: per-frame token bounds of a video (× factor² pixels).
VIDEO_MIN_TOKENS = 128
VIDEO_MAX_TOKENS = 768
#: qwen_vl_utils' MODEL_SEQ_LEN default: the pixel budget of a file video is 0.9 of it (× factor²).
MODEL_SEQ_LEN = 128000
#: The reranker's defaults (``FPS``, ``MAX_FRAMES``, ``MAX_TOTAL_PIXELS`` in the reference).
DEFAULT_FPS = 1.0
DEFAULT_MAX_FRAMES = 64
FRAME_LIST_TOTAL_PIXELS = 10 * 768 * 32 * 32
#: qwen_vl_utils' stand-in fps for a frame list (``sample_fps``), used for its timestamps.
FRAME_LIST_FPS = 2.0

#: Demuxers a video may be read with. Playlists and concat lists (hls, dash, concat, ...) are not
#: among them: they make FFmpeg open further files or URLs named inside the data — an SSRF of its own.
_DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,flv,ogg,gif,mpeg,asf,image2,apng,mjpeg"

Resampler = Literal["auto", "torch", "pil"]
T = TypeVar("T")


@dataclass(frozen=True)
class ProcessedVideo:
    """One video ready for the vision tower, with what its prompt needs.

    Attributes:
        pixel_values: float32 ``(t·h·w, channels·temporal_patch·patch·patch)`` (``pixel_values_videos`` rows).
        grid_thw: ``(t, h, w)``: temporal patches (frame pairs) and patches per side (``video_grid_thw``).
        timestamps: seconds of each temporal patch, as written in the prompt.
        frame_indices: which frames were used (of the file; of the padded list for frame lists).
        source_fps: the fps the timestamps are counted in (the file's average fps; 2.0 for frame lists).
        merge_size: patches merged per side into one token.
    """

    pixel_values: np.ndarray
    grid_thw: tuple[int, int, int]
    timestamps: tuple[float, ...]
    frame_indices: tuple[int, ...]
    source_fps: float
    merge_size: int

    @property
    def tokens_per_frame(self) -> int:
        """Video pad tokens of one temporal patch: h·w / merge²."""
        _, h, w = self.grid_thw
        return h * w // (self.merge_size * self.merge_size)

    @property
    def num_tokens(self) -> int:
        """Video pad tokens in all (the timestamps and vision start/end tokens come on top)."""
        return self.grid_thw[0] * self.tokens_per_frame

    def prompt(self, vision_start: str = "<|vision_start|>", video_pad: str = "<|video_pad|>",
               vision_end: str = "<|vision_end|>") -> str:
        """The text that stands for this video in the prompt (see :func:`video_prompt`)."""
        return video_prompt(self.timestamps, self.tokens_per_frame, vision_start, video_pad, vision_end)


def video_prompt(timestamps: Sequence[float], tokens_per_frame: int, vision_start: str = "<|vision_start|>",
                 video_pad: str = "<|video_pad|>", vision_end: str = "<|vision_end|>") -> str:
    """``<t seconds><|vision_start|><|video_pad|>×n<|vision_end|>`` for each temporal patch.

    This replaces the chat template's whole ``<|vision_start|><|video_pad|><|vision_end|>`` for the
    video, as Qwen3VLProcessor does in transformers 4.57 (the reference's version).

    Example:
        >>> video_prompt([0.5, 2.4], 2)
        '<0.5 seconds><|vision_start|><|video_pad|><|video_pad|><|vision_end|><2.4 seconds><|vision_start|><|video_pad|><|video_pad|><|vision_end|>'
    """
    frame = vision_start + video_pad * tokens_per_frame + vision_end
    return "".join(f"<{t:.1f} seconds>" + frame for t in timestamps)


def frame_timestamps(indices: Sequence[int], fps: float, temporal_patch_size: int = 2) -> list[float]:
    """Seconds of each temporal patch: the mean of its first and last frame's ``index / fps``.

    Example:
        >>> frame_timestamps([0, 10, 19, 29], 10.0)
        [0.5, 2.4]
    """
    indices = list(indices)
    if pad := -len(indices) % temporal_patch_size:
        indices.extend([indices[-1]] * pad)
    seconds = [i / fps for i in indices]
    return [(seconds[i] + seconds[i + temporal_patch_size - 1]) / 2 for i in range(0, len(seconds), temporal_patch_size)]


def frames_to_sample(total_frames: int, video_fps: float, *, fps: float = DEFAULT_FPS,
                     max_frames: int = DEFAULT_MAX_FRAMES, where: Where = None) -> int:
    """How many frames of a video file are used (qwen_vl_utils ``smart_nframes`` with fps and max_frames).

    Example:
        >>> frames_to_sample(30, 10.0), frames_to_sample(300, 30.0), frames_to_sample(100_000, 25.0)
        (4, 10, 64)
    """
    min_frames = math.ceil(FPS_MIN_FRAMES / FRAME_FACTOR) * FRAME_FACTOR
    top = math.floor(max_frames / FRAME_FACTOR) * FRAME_FACTOR
    wanted = total_frames / video_fps * fps
    n = math.floor(min(max(wanted, min_frames), top, total_frames) / FRAME_FACTOR) * FRAME_FACTOR
    if not FRAME_FACTOR <= n <= total_frames:
        raise MediaError(f"{subject(where)}the video has {total_frames} frame(s); at least {FRAME_FACTOR} are needed")
    return n


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def sample_indices(total_frames: int, nframes: int) -> list[int]:
    """``torch.linspace(0, total − 1, n).round()``: which frames of a file are used.

    torch computes in float32 (and its vectorised kernel differs from a scalar loop in the last bit),
    so torch is used when installed; without it a float32 numpy version agrees except at rare ties
    in videos of tens of thousands of frames.

    Example:
        >>> sample_indices(30, 4)
        [0, 10, 19, 29]
    """
    if _torch_available():
        import torch

        return [int(i) for i in torch.linspace(0, total_frames - 1, nframes).round().long().tolist()]
    if nframes == 1:
        return [0]
    start, end = np.float32(0), np.float32(total_frames - 1)
    step = (end - start) / np.float32(nframes - 1)
    idx = np.arange(nframes)
    half = nframes // 2
    values = np.concatenate([start + step * idx[:half].astype(np.float32),
                             end - step * (nframes - idx[half:] - 1).astype(np.float32)])
    return [int(i) for i in np.rint(values)]


def subsample_frame_list(frames: Sequence[T], max_frames: int) -> list[T]:
    """The reference's ``sample_frames``: ``linspace(0, len − 1, max_frames)`` truncated to int.

    Example:
        >>> subsample_frame_list(list(range(10)), 4)
        [0, 3, 6, 9]
    """
    if len(frames) <= max_frames:
        return list(frames)
    return [frames[i] for i in np.linspace(0, len(frames) - 1, max_frames, dtype=int).tolist()]


def frame_pixel_bounds(nframes: int, config: VisionConfig = QWEN3_VL, *, total_pixels: float | None = None
                       ) -> tuple[int, float]:
    """(min, max) pixels per frame of a video of ``nframes`` frames (qwen_vl_utils ``fetch_video``).

    ``total_pixels`` defaults to qwen_vl_utils' 128000·factor²·0.9 (what file videos get); the
    reranker passes :data:`FRAME_LIST_TOTAL_PIXELS` for frame lists.

    Example:
        >>> frame_pixel_bounds(64, total_pixels=FRAME_LIST_TOTAL_PIXELS)
        (131072, 245760.0)
    """
    factor2 = config.factor * config.factor
    min_pixels = VIDEO_MIN_TOKENS * factor2
    if total_pixels is None:
        total_pixels = MODEL_SEQ_LEN * factor2 * 0.9
    max_pixels = max(min(VIDEO_MAX_TOKENS * factor2, total_pixels / nframes * FRAME_FACTOR), int(min_pixels * 1.05))
    return min_pixels, max_pixels


def resize_frames(frames: np.ndarray, height: int, width: int, resampler: Resampler = "auto") -> np.ndarray:
    """Resize uint8 ``(T, H, W, 3)`` frames to ``height × width`` as torchvision does for qwen_vl_utils.

    ``"torch"``: bicubic with antialias on float32, clamped to 0…255 and rounded (torchvision's tensor
    path, bit for bit). ``"pil"``: Pillow's bicubic, which differs by a few levels on some pixels.
    ``"auto"``: torch when installed. Frames already at the size are returned as they are.
    """
    if frames.shape[1:3] == (height, width):
        return frames
    if resampler == "torch" or (resampler == "auto" and _torch_available()):
        torch = require("torch")
        with torch.no_grad():
            tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).to(torch.float32)
            out = torch.nn.functional.interpolate(tensor, size=(height, width), mode="bicubic",
                                                  align_corners=False, antialias=True)
            return out.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    Image = require("PIL.Image")
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BICUBIC)) for f in frames])


def _finish(frames: np.ndarray, indices: Sequence[int], fps: float, config: VisionConfig) -> ProcessedVideo:
    pixel_values, grid = patchify(normalize(frames, config), config)
    return ProcessedVideo(
        pixel_values=pixel_values,
        grid_thw=grid,
        timestamps=tuple(frame_timestamps(indices, fps, config.temporal_patch_size)),
        frame_indices=tuple(int(i) for i in indices),
        source_fps=float(fps),
        merge_size=config.merge_size,
    )


def video_from_frames(frames: Sequence[ImageSource], *, policy: MediaPolicy, config: VisionConfig = QWEN3_VL,
                      max_frames: int = DEFAULT_MAX_FRAMES, total_pixels: float = FRAME_LIST_TOTAL_PIXELS,
                      where: Where = None, resampler: Resampler = "auto") -> ProcessedVideo:
    """A video given as a list of frames (each any image source), processed as the reference does.

    Args:
        frames: the frames, in order; more than ``max_frames`` are subsampled (the reference uses its
            constructor's ``max_frames`` here, not the per-call one).
        policy: fetch rules and caps; lists longer than ``policy.max_frames`` are refused.
        total_pixels: the pixel budget of the whole video (the reference's ``total_pixels``).

    Raises:
        MediaTooLargeError: too many frames, or a frame over the byte or pixel cap.
        MediaError: no frames, an unreadable frame, or frames of different sizes.
    """
    if len(frames) == 0:
        raise MediaError(f"{subject(where)}the video has no frames")
    policy.check_frame_count(len(frames), where)
    positions = subsample_frame_list(list(range(len(frames))), max_frames)
    pre_factor = config.factor * 2  # qwen_vl_utils 0.0.14 gives fetch_image the image factor as patch size

    def one(position: int) -> np.ndarray:
        image = load_image(frames[position], policy=policy, where=where, what=f"frame {position}")
        label = f"{subject(where)}frame {position}" if where is not None else f"frame {position}"
        image = resize_image(image, factor=pre_factor, min_pixels=4 * pre_factor**2,
                             max_pixels=16384 * pre_factor**2, where=label)
        return np.asarray(image, dtype=np.uint8)

    if len(positions) > 1:
        # remote frames are fetched in parallel, as qwen_vl_utils does (8 workers)
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(positions))) as pool:
            arrays = list(pool.map(one, positions))
    else:
        arrays = [one(positions[0])]
    first = arrays[0].shape
    for position, array in zip(positions, arrays):
        if array.shape != first:
            raise MediaError(
                f"{subject(where)}the frames of a video must share one size: frame {position} becomes "
                f"{array.shape[1]}×{array.shape[0]} but frame {positions[0]} becomes {first[1]}×{first[0]}"
            )
    if pad := -len(arrays) % FRAME_FACTOR:
        arrays.extend([arrays[-1]] * pad)
    stacked = np.stack(arrays)
    min_pixels, max_pixels = frame_pixel_bounds(len(arrays), config, total_pixels=total_pixels)
    height, width = smart_resize(stacked.shape[1], stacked.shape[2], config.factor, min_pixels, max_pixels, where=where)
    resized = resize_frames(stacked, height, width, resampler)
    return _finish(resized, range(len(arrays)), FRAME_LIST_FPS, config)


@dataclass(frozen=True)
class VideoInfo:
    """What a video file's headers say (read before decoding)."""

    width: int
    height: int
    fps: float
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def _open(av: Any, data: bytes | Path, where: Where) -> Any:
    try:
        return av.open(io.BytesIO(data) if isinstance(data, bytes) else str(data), mode="r",
                       options={"format_whitelist": _DEMUXERS, "protocol_whitelist": "file"})
    except Exception:  # noqa: BLE001 - FFmpeg's messages name internals; ours names the problem
        raise MediaError(f"{subject(where)}the video is not in a container format PyAV can read") from None


def probe_video(data: bytes | Path, *, policy: MediaPolicy, where: Where = None) -> VideoInfo:
    """Size, average fps and frame count of a video file, checked against the policy before decoding.

    The frame count is the header's, or (when the container has none, as Matroska) the number of
    video packets, found by demuxing without decoding.

    Raises:
        MediaTooLargeError: frames over ``max_pixels`` or a video longer than ``max_video_seconds``.
        MediaError: no video stream, no frame rate, unreadable container.
    """
    av = require("av")
    with _open(av, data, where) as container:
        if not container.streams.video:
            raise MediaError(f"{subject(where)}the file has no video stream")
        stream = container.streams.video[0]
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        if width < 1 or height < 1:
            raise MediaError(f"{subject(where)}the video stream has no frame size")
        if width * height > policy.max_pixels:
            raise MediaTooLargeError(
                f"{subject(where)}the video's frames are {width}×{height} = {width * height:,} pixels but the "
                f"limit is {policy.max_pixels:,} pixels"
            )
        rate = stream.average_rate or stream.guessed_rate
        if not rate or float(rate) <= 0:
            raise MediaError(f"{subject(where)}the video stream has no frame rate")
        fps = float(rate)
        if container.duration and container.duration / 1e6 > policy.max_video_seconds:
            raise _too_long(container.duration / 1e6, policy, where)
        frames = int(stream.frames or 0)
        if frames <= 0:
            limit = math.ceil(policy.max_video_seconds * fps) + 1
            try:
                for packet in container.demux(stream):
                    if packet.size:
                        frames += 1
                        if frames > limit:
                            break
            except Exception:  # noqa: BLE001
                raise MediaError(f"{subject(where)}the video data is corrupt") from None
    info = VideoInfo(width=width, height=height, fps=fps, frames=frames)
    if info.seconds > policy.max_video_seconds:
        raise _too_long(info.seconds, policy, where)
    return info


def _too_long(seconds: float, policy: MediaPolicy, where: Where) -> MediaTooLargeError:
    return MediaTooLargeError(
        f"{subject(where)}the video is {seconds:.1f} s long but the limit is {policy.max_video_seconds:g} s"
    )


def _decode(data: bytes | Path, indices: Sequence[int], height: int, width: int, resampler: Resampler,
            where: Where) -> np.ndarray:
    """Decode frames in order, keeping (resized at once, to bound memory) only those at ``indices``."""
    av = require("av")
    wanted: dict[int, list[int]] = {}
    for slot, index in enumerate(indices):
        wanted.setdefault(index, []).append(slot)
    last = max(wanted)
    kept: list[np.ndarray | None] = [None] * len(indices)
    with _open(av, data, where) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for number, frame in enumerate(container.decode(stream)):
                if number in wanted:
                    rgb = frame.to_ndarray(format="rgb24")[None]
                    small = resize_frames(rgb, height, width, resampler)[0]
                    for slot in wanted[number]:
                        kept[slot] = small
                if number >= last:
                    break
        except Exception:  # noqa: BLE001
            if all(k is None for k in kept):
                raise MediaError(f"{subject(where)}the video data could not be decoded") from None
            log.warning("%svideo decoding stopped early; the last decoded frame stands in for the rest", subject(where))
    if kept[0] is None:
        raise MediaError(f"{subject(where)}the video data could not be decoded")
    missing = sum(k is None for k in kept)
    if missing:
        # headers can count a frame or two more than the stream holds
        log.warning("%s%d sampled frame(s) past the end of the video; repeating the last one", subject(where), missing)
        for slot in range(1, len(kept)):
            if kept[slot] is None:
                kept[slot] = kept[slot - 1]
    return np.stack(kept)  # type: ignore[arg-type]


def load_video(source: str | os.PathLike[str] | bytes, *, policy: MediaPolicy, config: VisionConfig = QWEN3_VL,
               fps: float = DEFAULT_FPS, max_frames: int = DEFAULT_MAX_FRAMES, where: Where = None,
               resampler: Resampler = "auto") -> ProcessedVideo:
    """A video file (path, ``file://``, http(s) URL, ``data:`` URI or bytes), sampled and processed.

    Args:
        fps: frames sampled per second of video (the reference's per-call ``fps``).
        max_frames: at most this many frames (rounded down to even).
        policy: fetch rules and caps: byte cap and timeout of videos, ``max_fps``, ``max_frames``,
            ``max_video_seconds``, ``max_pixels`` per frame.

    Frames are decoded by FFmpeg (PyAV) in order; the reference reads them with decord, whose YUV to
    RGB conversion may differ from FFmpeg's swscale by a level on some pixels.

    Example:
        >>> import av, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "clip.mp4")
        >>> with av.open(path, "w") as out:
        ...     s = out.add_stream("mpeg4", rate=10); s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        ...     for i in range(30):
        ...         for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")):
        ...             out.mux(p)
        ...     for p in s.encode():
        ...         out.mux(p)
        >>> v = load_video(path, policy=MediaPolicy.permissive())
        >>> v.frame_indices, v.timestamps, v.grid_thw
        ((0, 10, 19, 29), (0.5, 2.4), (2, 20, 28))
    """
    policy.check_video_request(fps, max_frames, where)
    data = read_media(source, kind="video", policy=policy, where=where)
    info = probe_video(data, policy=policy, where=where)
    nframes = frames_to_sample(info.frames, info.fps, fps=fps, max_frames=max_frames, where=where)
    indices = sample_indices(info.frames, nframes)
    min_pixels, max_pixels = frame_pixel_bounds(nframes, config)
    height, width = smart_resize(info.height, info.width, config.factor, min_pixels, max_pixels, where=where)
    frames = _decode(data, indices, height, width, resampler, where)
    return _finish(frames, indices, info.fps, config)


def process_video(source: str | os.PathLike[str] | bytes | Sequence[ImageSource], *, policy: MediaPolicy,
                  config: VisionConfig = QWEN3_VL, fps: float = DEFAULT_FPS, max_frames: int = DEFAULT_MAX_FRAMES,
                  where: Where = None, resampler: Resampler = "auto") -> ProcessedVideo:
    """A video as a ``Document`` holds it: a list/tuple of frames goes to :func:`video_from_frames`,
    anything else (path, URL, data URI, bytes) to :func:`load_video`.

    ``fps`` applies to files only (a frame list has no time of its own); ``max_frames`` to both.
    """
    if isinstance(source, (list, tuple)):
        return video_from_frames(source, policy=policy, config=config, max_frames=max_frames, where=where,
                                 resampler=resampler)
    return load_video(source, policy=policy, config=config, fps=fps, max_frames=max_frames, where=where,  # type: ignore[arg-type]
                      resampler=resampler)
