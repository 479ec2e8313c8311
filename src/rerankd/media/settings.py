"""What a request tells a vision-language family about its media: the fetch policy and video sampling.

The pipeline hands one :class:`MediaSettings` to :meth:`rerankd.families.Family.prepare` with every
request. The Python API uses :meth:`MediaSettings.default` (a permissive policy: the caller owns the
machine); a server builds one strict :class:`~rerankd.media.MediaPolicy` from its flags and passes
``MediaSettings(policy=strict)`` to :class:`rerankd.pipeline.Pipeline` (``media=``), and a request's
own ``fps`` / ``max_frames`` with :meth:`with_sampling` — each checked against the policy's caps
when a video is read.

Example:
    >>> MediaSettings.default().with_sampling(fps=2.0).settings()
    {'fps': 2.0, 'max_frames': 64}
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from rerankd.media.fetch import MediaPolicy
from rerankd.media.video import DEFAULT_FPS, DEFAULT_MAX_FRAMES


@dataclass(frozen=True)
class MediaSettings:
    """Where media may come from (``policy``) and how video files are sampled.

    Attributes:
        policy: fetch rules and caps (:class:`~rerankd.media.MediaPolicy`).
        fps: frames per second sampled from video files (the reference's 1).
        max_frames: frames a video is sampled to at most (the reference's 64).
        document_indices: the request's index of each document being prepared, when they are not
            0, 1, 2… (the pipeline prepares only cache misses, or windows): errors name the right one.
    """

    policy: MediaPolicy = field(default_factory=MediaPolicy.permissive)
    fps: float = DEFAULT_FPS
    max_frames: int = DEFAULT_MAX_FRAMES
    document_indices: tuple[int, ...] | None = None

    @classmethod
    def default(cls) -> "MediaSettings":
        """The Python API's settings: permissive policy, fps 1, at most 64 frames."""
        return cls()

    def with_sampling(self, fps: float | None = None, max_frames: int | None = None) -> "MediaSettings":
        """These settings with a request's own ``fps`` / ``max_frames`` (``None`` keeps the current one)."""
        changes: dict[str, Any] = {}
        if fps is not None:
            changes["fps"] = float(fps)
        if max_frames is not None:
            changes["max_frames"] = int(max_frames)
        return replace(self, **changes) if changes else self

    def settings(self) -> dict[str, Any]:
        """The parts that change a score (part of a result-cache key; the policy only refuses)."""
        return {"fps": self.fps, "max_frames": self.max_frames}
