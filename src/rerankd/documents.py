"""The document model: a query or a document is an ordered set of parts (text, image, video).

A plain ``str`` means a text document everywhere a query or document is accepted. Families declare
which modalities they read (:attr:`rerankd.families.Family.modalities`); the pipeline refuses any
other with one :class:`~rerankd.errors.InvalidDocumentError` naming the document and the model.

Example:
    >>> from rerankd import Document
    >>> Document.text("Paris is in France.").modalities
    frozenset({'text'})
    >>> as_document({"text": "a caption", "image": "cat.jpg"}, "document 0").modalities == {"text", "image"}
    True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence, Union

from rerankd.errors import InvalidDocumentError
from rerankd.text_checks import check_text

Modality = Literal["text", "image", "video"]
MODALITIES: tuple[Modality, ...] = ("text", "image", "video")

#: What an image part may hold: a path, raw bytes, a PIL image, or a ``data:`` / http(s) URI string.
ImageSource = Any
#: A video: a path or URI, or a list of frames (each an image source).
VideoSource = Any


@dataclass(frozen=True)
class Part:
    """One part of a document. ``value`` is a string for text, a source for images and videos."""

    modality: Modality
    value: Any

    def digest(self) -> bytes:
        """A content hash of this part: the text's bytes, or the media's bytes where they are at hand."""
        h = hashlib.sha256(self.modality.encode())
        for chunk in _content_chunks(self.value):
            h.update(len(chunk).to_bytes(8, "little"))
            h.update(chunk)
        return h.digest()


@dataclass(frozen=True)
class Document:
    """An ordered set of parts.

    Example:
        >>> Document.of(Document.text("a photo of"), Document.image(b"...")).modalities == {"text", "image"}
        True
        >>> Document.text("hello").as_text()
        'hello'
    """

    parts: tuple[Part, ...]

    @classmethod
    def text(cls, text: str) -> "Document":
        return cls((Part("text", text),))

    @classmethod
    def image(cls, source: ImageSource) -> "Document":
        """An image from a path, bytes, a PIL image, or a ``data:``/http(s) URI."""
        return cls((Part("image", source),))

    @classmethod
    def video(cls, source: VideoSource) -> "Document":
        """A video from a path or URI, or a list of frames."""
        return cls((Part("video", source),))

    @classmethod
    def of(cls, *documents: "Document") -> "Document":
        """The parts of several documents, in order, as one document."""
        return cls(tuple(part for document in documents for part in document.parts))

    @property
    def modalities(self) -> frozenset[str]:
        return frozenset(part.modality for part in self.parts)

    def texts(self) -> list[str]:
        return [part.value for part in self.parts if part.modality == "text"]

    def as_text(self) -> str:
        """The text of a text-only document (its text parts joined by newlines)."""
        return "\n".join(self.texts())

    def digest(self) -> bytes:
        """A content hash over every part, length-prefixed so that no two documents share it."""
        h = hashlib.sha256(b"rerankd-document")
        for part in self.parts:
            h.update(part.digest())
        return h.digest()


DocumentLike = Union[str, Document, dict]


def as_document(value: Any, where: str) -> Document:
    """A :class:`Document` from a ``str``, a ``Document``, or the model card's dict form.

    The dict form is ``{"text": ..., "image": ..., "video": ...}``, each a value or a list. ``where``
    names the input in errors (``"query"``, ``"document 3"``).
    """
    if isinstance(value, Document):
        document = value
    elif isinstance(value, str):
        document = Document.text(value)
    elif isinstance(value, dict):
        document = _from_dict(value, where)
    else:
        raise InvalidDocumentError(
            f"{where} is a {type(value).__name__}, not text or a rerankd.Document; send a string, a Document, "
            'or a dict with "text", "image" or "video"'
        )
    if not document.parts:
        raise InvalidDocumentError(f"{where} has no text, image or video; send its content")
    for part in document.parts:
        if part.modality == "text":
            check_text(part.value, where)
    if not any(part.modality != "text" or part.value.strip() for part in document.parts):
        raise InvalidDocumentError(f"{where} is empty; remove it or send its text")
    return document


def as_documents(values: Any, what: str = "documents") -> list[Document]:
    """A list of documents; each element is one document (a list is never split into several)."""
    if isinstance(values, (str, bytes, dict, Document)) or not isinstance(values, Sequence):
        raise InvalidDocumentError(f"{what} must be a list of documents (strings or rerankd.Document)")
    return [as_document(value, f"document {i}") for i, value in enumerate(values)]


def check_modalities(document: Document, allowed: frozenset[str], where: str, model: str) -> None:
    """Refuse a part whose modality the model does not read."""
    extra = document.modalities - allowed
    if extra:
        raise InvalidDocumentError(
            f"{where} holds {' and '.join(sorted(extra))} but {model} reads only {' and '.join(sorted(allowed))}; "
            "send text, or serve a model that reads that modality (e.g. Qwen3-VL-Reranker)"
        )


def _from_dict(value: dict, where: str) -> Document:
    unknown = sorted(set(value) - set(MODALITIES))
    if unknown:
        raise InvalidDocumentError(f"{where} has unknown field(s) {unknown}; use text, image and video")
    parts: list[Part] = []
    # The reference (Qwen3-VL) order inside one side: videos, then images, then texts.
    for modality in ("video", "image", "text"):
        if modality not in value or value[modality] is None:
            continue
        items = value[modality]
        if modality == "video":
            # The model card's convention: a string is one video file; a list is ONE video given as
            # frames; several videos are a list of such lists.
            videos = items if isinstance(items, list) and items and all(isinstance(v, list) for v in items) else [items]
            parts.extend(Part("video", v) for v in videos)
            continue
        for item in items if isinstance(items, (list, tuple)) else [items]:
            if modality == "text" and not isinstance(item, str):
                raise InvalidDocumentError(f"{where}.text must be a string or a list of strings")
            parts.append(Part(modality, item))
    return Document(tuple(parts))


def _content_chunks(value: Any) -> list[bytes]:
    if isinstance(value, str):
        return [value.encode("utf-8", "surrogatepass")]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return [bytes(value)]
    if isinstance(value, Path):
        return [b"path:" + str(value).encode("utf-8", "surrogatepass")]
    if isinstance(value, (list, tuple)):
        return [hashlib.sha256(b"".join(_content_chunks(v))).digest() for v in value]
    tobytes = getattr(value, "tobytes", None)  # PIL images, numpy frames
    if callable(tobytes):
        size = getattr(value, "size", "")
        mode = getattr(value, "mode", "")
        return [f"{type(value).__name__}:{mode}:{size}".encode(), tobytes()]
    return [repr(value).encode("utf-8", "surrogatepass")]
