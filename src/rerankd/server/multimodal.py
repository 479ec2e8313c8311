"""Multimodal documents and queries as the dialects write them, shaped into rerankd's native dict form.

The server only reshapes; reading, fetching and checking media is the pipeline's (under the server's
strict :class:`~rerankd.media.MediaPolicy`). Three shapes are accepted, in queries and documents alike:

==========  ===========================================================================================
native      ``{"text": ..., "image": ..., "video": ...}`` (each a value or a list; a video a URL or a
            list of frames), as :func:`rerankd.documents.as_document` reads it
Jina        ``{"image": "<http(s) URL | data: URI | bare base64>"}`` or ``{"text": "..."}``
vLLM        ``{"content": [{"type": "image_url", "image_url": {"url": ...}},
            {"type": "video_url", "video_url": {"url": ...}}, {"type": "text", "text": ...}]}``
==========  ===========================================================================================

A bare base64 string (Jina's form) is recognised by its alphabet: only ``A–Z a–z 0–9 + / =``, no dot,
and a length that is a multiple of 4 once padded; it is passed on as a ``data:`` URI so the media layer
caps its size before decoding it. Anything else is a URL or, where the server allows local paths, a
path.

A list of documents is always one document per element. vLLM's own multi-document form — ``documents``
as ONE object ``{"content": [part, part, ...]}`` — is read as vLLM reads it: each part one document.

Example:
    >>> native({"content": [{"type": "text", "text": "a cat"},
    ...                     {"type": "image_url", "image_url": {"url": "https://x.org/c.jpg"}}]}, "document 0")
    {'text': ['a cat'], 'image': ['https://x.org/c.jpg']}
    >>> native({"image": "iVBORw0KGgo="}, "document 1")
    {'image': 'data:;base64,iVBORw0KGgo='}
"""

from __future__ import annotations

import re
from typing import Any

from rerankd.errors import InvalidDocumentError

MEDIA_FIELDS = ("image", "video")
_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}$")
#: vLLM content-part type → (native field, key holding the value, key inside it holding the URL).
_PARTS = {
    "text": ("text", "text", None),
    "image_url": ("image", "image_url", "url"),
    "video_url": ("video", "video_url", "url"),
    "input_image": ("image", "image_url", None),  # OpenAI Responses-style parts, as some clients send them
}


def is_multimodal(value: Any) -> bool:
    """Whether a request object holds media or content parts (and so is not a plain text document)."""
    return isinstance(value, dict) and (
        "content" in value or any(value.get(k) is not None for k in MEDIA_FIELDS))


def looks_like_base64(text: str) -> bool:
    """Bare base64 (Jina's inline image), told from a URL or path by its alphabet and length.

    Example:
        >>> looks_like_base64("iVBORw0KGgo="), looks_like_base64("images/cat.jpg"), looks_like_base64("https://a.b/c")
        (True, False, False)
    """
    stripped = re.sub(r"\s+", "", text)
    return len(stripped) >= 8 and len(stripped) % 4 == 0 and bool(_BASE64.match(text))


def _media_value(value: Any) -> Any:
    if isinstance(value, str) and looks_like_base64(value):
        return "data:;base64," + re.sub(r"\s+", "", value)
    if isinstance(value, list):
        return [_media_value(v) for v in value]
    return value


def native(value: dict[str, Any], where: str) -> dict[str, Any]:
    """A Jina, vLLM or native object as the native dict (``where`` names it in errors)."""
    if "content" in value:
        return _from_content(value, where)
    out: dict[str, Any] = {}
    for field in ("text", *MEDIA_FIELDS):
        if value.get(field) is not None:
            out[field] = value[field] if field == "text" else _media_value(value[field])
    return out


def _from_content(value: dict[str, Any], where: str) -> dict[str, Any]:
    parts = value["content"]
    if isinstance(parts, str):
        return {"text": parts}
    if not isinstance(parts, list) or not parts:
        raise InvalidDocumentError(f'{where}: "content" must be a non-empty list of parts '
                                   '({"type": "text" | "image_url" | "video_url", ...})')
    out: dict[str, list[Any]] = {}
    for i, part in enumerate(parts):
        field, key, url_key = _part(part, f"{where} content[{i}]")
        item = part.get(key)
        if url_key is not None:
            item = item.get(url_key) if isinstance(item, dict) else None
        elif isinstance(item, dict):
            item = item.get("url")
        if not isinstance(item, str):
            shown = f"{key}.{url_key}" if url_key else key
            raise InvalidDocumentError(f"{where} content[{i}] of type {part['type']!r} needs a string {shown!r}")
        out.setdefault(field, []).append(item if field == "text" else _media_value(item))
    return out


def _part(part: Any, where: str) -> tuple[str, str, str | None]:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise InvalidDocumentError(f'{where} must be an object with a "type" (text, image_url or video_url)')
    kind = part["type"]
    if kind not in _PARTS:
        raise InvalidDocumentError(f"{where} has type {kind!r}; rerankd reads text, image_url and video_url parts")
    return _PARTS[kind]


def content_documents(value: Any) -> list[Any] | None:
    """vLLM's ``documents: {"content": [...]}``: each part one document (``None`` when not that form)."""
    if isinstance(value, dict) and isinstance(value.get("content"), list) and set(value) <= {"content"}:
        return [{"content": [part]} for part in value["content"]]
    return None
