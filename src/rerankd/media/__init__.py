"""Images and video for vision-language rerankers, and the policy that keeps fetching them safe.

- :mod:`rerankd.media.fetch`: :class:`MediaPolicy` (where media may come from, caps) and
  :func:`read_media` (bytes of a path, ``data:`` URI or URL, fetched under the policy);
- :mod:`rerankd.media.images`: :func:`load_image` (any source to RGB, pixel cap before decoding) and
  :func:`preprocess_image` (Qwen-VL resize, normalize, patchify);
- :mod:`rerankd.media.settings`: :class:`MediaSettings` (a policy plus video sampling), what a request
  hands a vision-language family;
- :mod:`rerankd.media.video`: :func:`load_video` (files, PyAV) and :func:`video_from_frames`
  (frame lists), both giving a :class:`ProcessedVideo` with its prompt timestamps.

Nothing heavy is imported here: Pillow, PyAV, httpcore and torch load when first used.

Example:
    >>> from rerankd.media import MediaPolicy, load_image, preprocess_image
    >>> gif = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
    >>> image = load_image(gif, policy=MediaPolicy())   # inline media: allowed by the strict default
    >>> image.mode, image.size, preprocess_image(image).num_tokens
    ('RGB', (1, 1), 4)
"""

from rerankd.media.fetch import MediaKind, MediaPolicy, Where, decode_base64, decode_data_uri, fetch_url, read_media
from rerankd.media.images import (
    QWEN3_VL,
    ImageSource,
    ProcessedImage,
    VisionConfig,
    image_token_count,
    load_image,
    preprocess_image,
    smart_resize,
    stack_visual,
    to_rgb,
)
from rerankd.media.settings import MediaSettings
from rerankd.media.video import (
    ProcessedVideo,
    frame_timestamps,
    load_video,
    process_video,
    video_from_frames,
    video_prompt,
)

__all__ = [
    "QWEN3_VL",
    "ImageSource",
    "MediaKind",
    "MediaPolicy",
    "MediaSettings",
    "ProcessedImage",
    "ProcessedVideo",
    "VisionConfig",
    "Where",
    "decode_base64",
    "decode_data_uri",
    "fetch_url",
    "frame_timestamps",
    "image_token_count",
    "load_image",
    "load_video",
    "preprocess_image",
    "process_video",
    "read_media",
    "smart_resize",
    "stack_visual",
    "to_rgb",
    "video_from_frames",
    "video_prompt",
]
