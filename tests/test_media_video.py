"""Videos are sampled, sized, patchified and time-stamped as the Qwen3-VL reference does it.

Videos are written at test time with PyAV (lossless FFV1, so the colour of each decoded frame says
which frame it was). Oracles: Qwen3VLVideoProcessor.patchify and Qwen3VLProcessor._calculate_timestamps
from transformers (both run without torchvision), torch.linspace, and the torchvision resize recipe.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from media_helpers import coco_images, frame_colour, write_video
from rerankd.errors import MediaError, MediaTooLargeError
from rerankd.media.fetch import MediaPolicy

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("av")

from rerankd.media import video as video_module  # noqa: E402
from rerankd.media.images import resize_image  # noqa: E402
from rerankd.media.video import (  # noqa: E402
    frame_pixel_bounds,
    frame_timestamps,
    frames_to_sample,
    load_video,
    resize_frames,
    sample_indices,
    subsample_frame_list,
    video_from_frames,
)

POLICY = MediaPolicy.permissive()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s at 10 fps, 64×48, frame i a solid frame_colour(i)."""
    return write_video(tmp_path_factory.mktemp("video") / "clip.mkv")


def _colours(pixel_values: np.ndarray, grid: tuple[int, int, int]) -> list[tuple[int, ...]]:
    """The colour of each frame (top-left pixel), undoing the normalisation: 2 per temporal patch."""
    t, h, w = grid
    rows = pixel_values.reshape(t, h * w, 3, 2, 16, 16)[:, 0, :, :, 0, 0]  # (t, channel, frame of pair)
    values = np.rint(rows * 127.5 + 127.5).astype(int)
    return [tuple(values[i, :, k]) for i in range(t) for k in range(2)]


def test_a_file_is_sampled_at_one_fps(clip: Path) -> None:
    video = load_video(clip, policy=POLICY, where=0)
    assert video.frame_indices == (0, 10, 19, 29)
    assert video.source_fps == 10.0
    assert video.timestamps == pytest.approx((0.5, 2.4))
    assert video.grid_thw == (2, 20, 28)  # 48×64 grown to ≥ 128·32² pixels: 320×448
    assert video.num_tokens == 2 * 20 * 28 // 4 == 280
    assert _colours(video.pixel_values, video.grid_thw) == [frame_colour(i) for i in (0, 10, 19, 29)]
    prompt = video.prompt()
    assert prompt.startswith("<0.5 seconds><|vision_start|><|video_pad|>")
    assert prompt.count("<|video_pad|>") == 280 and prompt.count("<|vision_start|>") == 2
    assert "<|vision_end|><2.4 seconds><|vision_start|>" in prompt and prompt.endswith("<|vision_end|>")


def test_fps_and_max_frames(clip: Path) -> None:
    video = load_video(clip, policy=POLICY, fps=2.0)
    assert video.frame_indices == (0, 6, 12, 17, 23, 29)
    assert _colours(video.pixel_values, video.grid_thw) == [frame_colour(i) for i in video.frame_indices]
    assert load_video(clip, policy=POLICY, fps=2.0, max_frames=5).frame_indices == (0, 10, 19, 29)


def test_other_containers_and_sources(tmp_path: Path) -> None:
    mp4 = write_video(tmp_path / "clip.mp4", codec="mpeg4", pix_fmt="yuv420p")  # frame count from the header
    data = mp4.read_bytes()
    for source in (mp4, str(mp4), f"file://{mp4}", data, "data:video/mp4;base64," + base64.b64encode(data).decode()):
        video = load_video(source, policy=POLICY)
        assert video.frame_indices == (0, 10, 19, 29) and video.grid_thw == (2, 20, 28)
        # lossy, so only close to the colours
        got = np.array(_colours(video.pixel_values, video.grid_thw))
        assert np.abs(got - np.array([frame_colour(i) for i in video.frame_indices])).max() <= 4


def test_video_caps(clip: Path, tmp_path: Path) -> None:
    with pytest.raises(MediaTooLargeError, match=r"^document 1: the video is 3.0 s long but the limit is 2 s$"):
        load_video(clip, policy=MediaPolicy.permissive(max_video_seconds=2.0), where=1)
    with pytest.raises(MediaTooLargeError, match=r"^document 1: the video's frames are 64×48 = 3,072 pixels but the "
                                                 r"limit is 1,000 pixels$"):
        load_video(clip, policy=MediaPolicy.permissive(max_pixels=1000), where=1)
    with pytest.raises(MediaTooLargeError, match=r"^document 1: the video is .* but the limit is 1,000 bytes$"):
        load_video(clip.read_bytes(), policy=MediaPolicy.permissive(max_video_bytes=1000), where=1)
    with pytest.raises(MediaTooLargeError, match=r"^document 1: fps 4 was asked for but the limit is 2$"):
        load_video(clip, policy=MediaPolicy.permissive(max_fps=2.0), fps=4.0, where=1)
    with pytest.raises(MediaTooLargeError, match=r"^document 1: max_frames 128 was asked for but the limit is 64 frames$"):
        load_video(clip, policy=MediaPolicy.permissive(max_frames=64), max_frames=128, where=1)
    one = write_video(tmp_path / "one.mkv", frames=1)
    with pytest.raises(MediaError, match=r"^document 1: the video has 1 frame\(s\); at least 2 are needed$"):
        load_video(one, policy=POLICY, where=1)


def test_unreadable_and_indirect_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"^document 2: the video is not in a container format PyAV can read$"):
        load_video(b"\x00" * 5000, policy=POLICY, where=2)
    # a playlist would make FFmpeg fetch what it names: an SSRF of its own
    playlist = tmp_path / "list.m3u8"
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://169.254.169.254/a.ts\n#EXT-X-ENDLIST\n")
    concat = tmp_path / "list.txt"
    concat.write_text("ffconcat version 1.0\nfile /etc/passwd\n")
    for path in (playlist, concat):
        with pytest.raises(MediaError, match=r"not in a container format PyAV can read"):
            load_video(path, policy=POLICY, where=2)


def test_frame_lists_as_the_reference_builds_them() -> None:
    torch = pytest.importorskip("torch")
    transformers_vp = pytest.importorskip("transformers.models.qwen3_vl.video_processing_qwen3_vl")
    paths = [p for p in coco_images() if Image.open(p).size in ((640, 422), (640, 428), (640, 426))][:3]
    assert len(paths) == 3
    total_pixels = 491_520  # small enough that 4 frames of 448×640 must shrink
    video = video_from_frames([str(p) for p in paths], policy=POLICY, total_pixels=total_pixels, where=0)

    # the reference, step by step: fetch_image at factor 64, pad to even, one size for all, torchvision resize
    pre = [np.asarray(resize_image(Image.open(p).convert("RGB"), factor=64, min_pixels=4 * 64 * 64,
                                   max_pixels=16384 * 64 * 64)) for p in paths]
    assert all(a.shape == (448, 640, 3) for a in pre)
    frames = np.stack(pre + [pre[-1]])
    assert frame_pixel_bounds(4, total_pixels=total_pixels) == (131072, 245760.0)
    height, width = 384, 576  # smart_resize(448, 640, 32, 131072, 245760)
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    tensor = torch.nn.functional.interpolate(tensor, size=[height, width], mode="bicubic", align_corners=False,
                                             antialias=True).clamp(0, 255).round()
    normalized = (tensor / 255 - 0.5) / 0.5
    processor = transformers_vp.Qwen3VLVideoProcessor()
    expected, grid_t, grid_h, grid_w = processor.patchify(normalized[None], patch_size=16, merge_size=2,
                                                          temporal_patch_size=2)
    assert video.grid_thw == (grid_t, grid_h, grid_w) == (2, 24, 36)
    np.testing.assert_allclose(video.pixel_values, expected[0].numpy(), rtol=0, atol=1e-6)
    assert video.frame_indices == (0, 1, 2, 3) and video.source_fps == 2.0
    assert video.timestamps == (0.25, 1.25)
    assert video.prompt().startswith("<0.2 seconds><|vision_start|>") and "<1.2 seconds>" in video.prompt()


def test_long_frame_lists_are_subsampled() -> None:
    frames = [Image.new("RGB", (64, 48), frame_colour(i)) for i in range(20)]
    positions = subsample_frame_list(list(range(20)), 8)
    assert positions == [0, 2, 5, 8, 10, 13, 16, 19]  # linspace(0, 19, 8) truncated
    assert subsample_frame_list(list(range(70)), 64)[:4] == [0, 1, 2, 3]
    video = video_from_frames(frames, policy=POLICY, max_frames=8)
    assert video.grid_thw[0] == 4
    assert _colours(video.pixel_values, video.grid_thw) == [frame_colour(i) for i in positions]
    odd = video_from_frames(frames[:5], policy=POLICY)
    assert odd.grid_thw[0] == 3 and _colours(odd.pixel_values, odd.grid_thw)[-2:] == [frame_colour(4)] * 2


def test_frames_must_share_a_size() -> None:
    frames = [Image.new("RGB", (64, 48)), Image.new("RGB", (640, 480))]
    with pytest.raises(MediaError, match=r"^document 3: the frames of a video must share one size: frame 1 becomes "
                                         r"640×512 but frame 0 becomes 192×128$"):
        video_from_frames(frames, policy=POLICY, where=3)
    with pytest.raises(MediaError, match=r"^document 3: the video has no frames$"):
        video_from_frames([], policy=POLICY, where=3)


def test_timestamps_match_the_processor() -> None:
    processing = pytest.importorskip("transformers.models.qwen3_vl.processing_qwen3_vl")
    for indices, fps in [([0, 10, 19, 29], 10.0), (list(range(8)), 2.0), ([0, 7, 15, 22, 30], 29.97)]:
        expected = processing.Qwen3VLProcessor._calculate_timestamps(None, list(indices), fps, 2)
        assert frame_timestamps(indices, fps) == expected


def test_sample_counts_and_indices(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    assert frames_to_sample(30, 10.0) == 4            # 3 s at 1 fps, raised to the minimum of 4
    assert frames_to_sample(300, 30.0) == 10
    assert frames_to_sample(301, 30.0) == 10           # 10.03 floored to an even count
    assert frames_to_sample(3, 30.0) == 2              # never more than the video has
    assert frames_to_sample(90_000, 30.0) == 64
    assert frames_to_sample(90_000, 30.0, max_frames=63) == 62
    cases = [(30, 4), (31, 6), (301, 10), (1000, 64), (4999, 64), (12345, 768)]
    for total, n in cases:
        assert sample_indices(total, n) == torch.linspace(0, total - 1, n).round().long().tolist()
    monkeypatch.setattr(video_module, "_torch_available", lambda: False)  # the numpy float32 fallback
    for total, n in cases:
        assert sample_indices(total, n) == torch.linspace(0, total - 1, n).round().long().tolist()


def test_resamplers_agree_closely() -> None:
    pytest.importorskip("torch")
    frames = np.stack([np.asarray(Image.open(p).convert("RGB").resize((320, 224))) for p in coco_images(2)])
    via_torch = resize_frames(frames, 448, 640, "torch").astype(int)
    via_pil = resize_frames(frames, 448, 640, "pil").astype(int)
    assert via_torch.shape == via_pil.shape == (2, 448, 640, 3)
    assert np.abs(via_torch - via_pil).mean() < 0.5 and np.abs(via_torch - via_pil).max() <= 12
    assert resize_frames(frames, 224, 320, "torch") is frames  # already at the size: untouched
