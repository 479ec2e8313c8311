"""Vision-language yes/no rerankers: Qwen3-VL-Reranker (2B, 8B) and any Qwen3-VL scored the same way.

The prompt is the official one (QwenLM/Qwen3-VL-Embedding ``qwen3_vl_reranker.py``): the text
Qwen3-Reranker's system message, then one user turn whose content is ``<Instruct>: {instruction}``,
``<Query>:`` and the query's parts, ``\\n<Document>:`` and the document's parts, concatenated with
nothing between them (the chat template joins content items as is). Inside a side, videos come
first, then images, then texts; a side with nothing is the text ``NULL``. No ``<think>`` block: the
turn ends ``<|im_end|>\\n<|im_start|>assistant\\n``. Each image becomes
``<|vision_start|>`` + one ``<|image_pad|>`` per merged patch + ``<|vision_end|>``, each video
``<t seconds><|vision_start|><|video_pad|>…<|vision_end|>`` per temporal patch, and the whole
string is tokenized in one pass (``>:`` can merge with the text after it).

Truncation is the reference's: all tokens but the last five (the answer turn) are cut to
``max_length`` by dropping plain tokens from the end while every special token — image and video
pads included — is kept, so a sequence can be up to ``max_length + 5`` tokens.

Each sequence carries its media (:class:`Visual`: pixel rows, grid, a content hash the backend's
feature cache is keyed by) and its 3-row M-RoPE positions (``get_rope_index``) in
:attr:`~rerankd.families.Encoded.extras`; its planned cost counts the vision tower's tokens too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from rerankd.documents import Document, Part
from rerankd.errors import UnsupportedModelError
from rerankd.families.base import Encoded, Family, PreparedRequest, read_json
from rerankd.families.cross_encoder import scalar_outputs
from rerankd.families.heads import YesNoRow
from rerankd.families.llm_yes_no import SYSTEM_PROMPT
from rerankd.media.settings import MediaSettings

PREFIX = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"
#: Tokens of the suffix the reference keeps out of truncation (``<|im_end|> \n <|im_start|> assistant \n``).
SUFFIX_TOKENS = 5
DEFAULT_INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."
DEFAULT_MAX_LENGTH = 10240
QUERY_LABEL, DOCUMENT_LABEL = "<Query>:", "\n<Document>:"
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
_ORDER = {"video": 0, "image": 1, "text": 2}


@dataclass(frozen=True, eq=False)
class Visual:
    """One image or video of a sequence, as the vision tower reads it.

    Attributes:
        kind: ``image`` or ``video``.
        key: content hash of the pixels and grid (the feature cache's key: the same picture sent as a
            path, bytes or data URI shares it).
        pixel_values: float32 ``(t·h·w, c·temporal·patch²)`` rows.
        grid_thw: ``(t, h, w)`` in patches.
        prompt: a video's timestamped placeholder text (empty for images).
    """

    kind: Literal["image", "video"]
    key: bytes
    pixel_values: np.ndarray
    grid_thw: tuple[int, int, int]
    prompt: str = ""

    @property
    def patches(self) -> int:
        t, h, w = self.grid_thw
        return t * h * w


def _visual(kind: Literal["image", "video"], pixel_values: np.ndarray, grid: tuple[int, int, int],
            prompt: str = "") -> Visual:
    h = hashlib.blake2b(digest_size=20)
    h.update(kind.encode())
    h.update(np.asarray(grid, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(pixel_values).data)
    return Visual(kind, h.digest(), pixel_values, (int(grid[0]), int(grid[1]), int(grid[2])), prompt)


def rope_index(input_ids: Sequence[int], visuals: Sequence[Visual], image_id: int, video_id: int,
               merge: int) -> np.ndarray:
    """3-row M-RoPE positions of one sequence, as transformers' ``Qwen3VLModel.get_rope_index``.

    Text tokens advance all three rows together; a run of image (or video-frame) pads gets
    (t, h, w) grid positions offset by the position reached so far, which then advances by
    max(h, w) / merge. A video's frames are separate runs (timestamps stand between them), each a
    grid with t = 1.
    """
    ids = np.asarray(input_ids, dtype=np.int64)
    kinds = np.where(ids == image_id, 1, np.where(ids == video_id, 2, 0))
    grids = {1: iter([v.grid_thw for v in visuals if v.kind == "image"]),
             2: iter([(1, g[1], g[2]) for v in visuals if v.kind == "video" for g in [v.grid_thw] * v.grid_thw[0]])}
    out = np.empty((3, len(ids)), dtype=np.int64)
    edges = np.flatnonzero(np.diff(kinds)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(ids)]])
    pos = 0
    for start, end in zip(starts, ends):
        kind = int(kinds[start])
        if kind == 0:
            out[:, start:end] = np.arange(pos, pos + end - start)
            pos += end - start
            continue
        t, h, w = next(grids[kind])
        gh, gw = h // merge, w // merge
        tt, hh, ww = np.meshgrid(np.arange(t), np.arange(gh), np.arange(gw), indexing="ij")
        out[0, start:end] = tt.reshape(-1) + pos
        out[1, start:end] = hh.reshape(-1) + pos
        out[2, start:end] = ww.reshape(-1) + pos
        pos += max(h, w) // merge
    return out


class VisionLanguageFamily(Family):
    """Qwen3-VL-Reranker: text, images and video in queries and documents, scored as yes − no."""

    kind = "vision-language"
    padding_side = "left"
    activation = "sigmoid"
    modalities = frozenset({"text", "image", "video"})

    def __init__(self, model_dir: Path, config: dict[str, Any], tokenizer: Any, max_length: int) -> None:
        super().__init__(model_dir, config, tokenizer, max_length)
        from rerankd.media.images import VisionConfig

        self.yes_id = tokenizer.token_to_id("yes")
        self.no_id = tokenizer.token_to_id("no")
        if self.yes_id is None or self.no_id is None:
            raise UnsupportedModelError(f"{model_dir}'s tokenizer has no single 'yes'/'no' tokens to score with")
        ids = {t: tokenizer.token_to_id(t) for t in (VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise UnsupportedModelError(f"{model_dir}'s tokenizer lacks the vision tokens {missing}")
        self.image_token_id = int(config.get("image_token_id", ids[IMAGE_PAD]))
        self.video_token_id = int(config.get("video_token_id", ids[VIDEO_PAD]))
        vision = config.get("vision_config") or {}
        self.vision = VisionConfig.from_preprocessor_config(
            {**read_json(model_dir / "preprocessor_config.json"),
             **{k: vision[k] for k in ("patch_size", "temporal_patch_size") if k in vision},
             **({"merge_size": vision["spatial_merge_size"]} if "spatial_merge_size" in vision else {})})
        self.special_ids = frozenset(_special_ids(model_dir, tokenizer))
        self.default_instruction = DEFAULT_INSTRUCTION

    @property
    def head(self) -> YesNoRow:
        return YesNoRow(self.yes_id, self.no_id, row_source="lm_head", vision=True)

    # -- prompt --------------------------------------------------------------------------------------

    def render(self, query: Document, document: Document, instruction: str | None,
               media: dict[int, Visual]) -> str:
        """The whole prompt of one pair, placeholders expanded (``media``: part id → its Visual)."""
        return (PREFIX + "<Instruct>: " + (instruction or self.default_instruction)
                + self._side(QUERY_LABEL, query, media) + self._side(DOCUMENT_LABEL, document, media) + SUFFIX)

    def _side(self, label: str, document: Document, media: dict[int, Visual]) -> str:
        parts = ordered_parts(document)
        if not parts:
            return label + "NULL"
        return label + "".join(self._placeholder(p, media) for p in parts)

    def _placeholder(self, part: Part, media: dict[int, Visual]) -> str:
        if part.modality == "text":
            return str(part.value)
        visual = media[id(part)]
        t, h, w = visual.grid_thw
        per_frame = h * w // (self.vision.merge_size ** 2)
        if visual.kind == "image":
            return VISION_START + IMAGE_PAD * (t * per_frame) + VISION_END
        return visual.prompt

    # -- media ---------------------------------------------------------------------------------------

    def _resolve(self, documents: Sequence[tuple[Document, Any]], settings: MediaSettings) -> dict[int, Visual]:
        """Every image and video part read under the policy and preprocessed, keyed by ``id(part)``."""
        from rerankd.media.images import load_image, preprocess_image
        from rerankd.media.video import process_video

        policy = settings.policy
        images = sum(1 for d, _ in documents for p in d.parts if p.modality == "image")
        policy.check_image_count(images)
        out: dict[int, Visual] = {}
        for document, where in documents:
            for part in document.parts:
                if id(part) in out:  # the same part object in several documents: read once
                    continue
                if part.modality == "image":
                    processed = preprocess_image(load_image(part.value, policy=policy, where=where), self.vision,
                                                 where=where)
                    out[id(part)] = _visual("image", processed.pixel_values, processed.grid_thw)
                elif part.modality == "video":
                    video = process_video(part.value, policy=policy, config=self.vision, fps=settings.fps,
                                          max_frames=settings.max_frames, where=where)
                    out[id(part)] = _visual("video", video.pixel_values, video.grid_thw,
                                            video.prompt(VISION_START, VIDEO_PAD, VISION_END))
        return out

    # -- prepare -------------------------------------------------------------------------------------

    def prepare(
        self,
        query: Document,
        documents: Sequence[Document],
        *,
        instruction: str | None = None,
        max_doc_tokens: int | None = None,
        media: MediaSettings | None = None,
    ) -> PreparedRequest:
        settings = media or MediaSettings.default()
        cut = [False] * len(documents)
        if max_doc_tokens is not None:
            shortened = [self._cut_text(d, max_doc_tokens) for d in documents]
            cut = [s is not d for s, d in zip(shortened, documents)]
            documents = shortened
        names = settings.document_indices or range(len(documents))
        resolved = self._resolve([(query, "the query")] + list(zip(documents, names)), settings)
        texts = [self.render(query, d, instruction, resolved) for d in documents]
        return self._encode(query, documents, texts, resolved, cut)

    def prompts(self, query: Document, documents: Sequence[Document], instruction: str | None = None,
                media: MediaSettings | None = None) -> list[str]:
        """The rendered prompt of each (query, document) pair, before tokenization (to inspect or compare)."""
        resolved = self._resolve([(query, "the query")] + [(d, i) for i, d in enumerate(documents)],
                                 media or MediaSettings.default())
        return [self.render(query, d, instruction, resolved) for d in documents]

    def _encode(self, query: Document, documents: Sequence[Document], texts: list[str],
                resolved: dict[int, Visual], cut: list[bool]) -> PreparedRequest:
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        merge = self.vision.merge_size
        sequences = []
        for document, enc, was_cut in zip(documents, encodings, cut):
            ids, truncated = self.truncate(enc.ids)
            visuals = tuple(resolved[id(p)] for side in (query, document) for p in ordered_parts(side)
                            if p.modality != "text")
            positions = rope_index(ids, visuals, self.image_token_id, self.video_token_id, merge)
            tower = sum(v.patches for v in visuals) // (merge * merge)
            sequences.append(Encoded(tuple(ids), None, truncated or was_cut,
                                     extras={"visuals": visuals, "position_ids": positions},
                                     cost=len(ids) + tower))
        return PreparedRequest(sequences, list(range(len(sequences))), scalar_outputs)

    def truncate(self, ids: Sequence[int]) -> tuple[list[int], bool]:
        """The reference's ``truncate_tokens_optimized`` on all but the last 5 tokens."""
        body, tail = list(ids[:-SUFFIX_TOKENS]), list(ids[-SUFFIX_TOKENS:])
        if len(body) <= self.max_length:
            return body + tail, False
        special = self.special_ids
        keep = self.max_length - sum(1 for t in body if t in special)
        kept: list[int] = []
        plain = 0
        for t in body:
            if t in special:
                kept.append(t)
            elif plain < keep:
                kept.append(t)
                plain += 1
        return kept + tail, True

    def _cut_text(self, document: Document, max_tokens: int) -> Document:
        """The document's text parts cut to ``max_tokens`` tokens in all (media untouched)."""
        left, parts, changed = max_tokens, [], False
        for part in document.parts:
            if part.modality != "text":
                parts.append(part)
                continue
            ids = self.text_token_ids(part.value)
            if len(ids) > left:
                changed = True
                ids = ids[:left]
                part = Part("text", self.decode(ids))
            left -= len(ids)
            if part.value:
                parts.append(part)
        return Document(tuple(parts)) if changed else document

    def document_budget(self, query: Document, instruction: str | None = None) -> int:
        return self.max_length - len(self.tokenizer.encode(
            PREFIX + "<Instruct>: " + (instruction or self.default_instruction) + QUERY_LABEL + query.as_text()
            + DOCUMENT_LABEL + SUFFIX, add_special_tokens=False).ids)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "default_instruction": self.default_instruction,
                "yes_token_id": self.yes_id, "no_token_id": self.no_id,
                "min_pixels": self.vision.min_pixels, "max_pixels": self.vision.max_pixels}


def ordered_parts(document: Document) -> list[Part]:
    """A side's parts in the reference's order: videos, then images, then texts (each in input order).

    Empty text parts are dropped; a side left with nothing is written ``NULL``.
    """
    parts = [p for p in document.parts if p.modality != "text" or str(p.value)]
    return sorted(parts, key=lambda p: _ORDER[p.modality])


def _special_ids(model_dir: Path, tokenizer: Any) -> set[int]:
    """transformers' ``all_special_ids``: the named special tokens and the extra/additional ones."""
    config = read_json(model_dir / "tokenizer_config.json")
    names: list[str] = []
    for key in ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"):
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            names.append(value)
    for key in ("additional_special_tokens", "extra_special_tokens"):
        value = config.get(key) or []
        if isinstance(value, dict):
            value = list(value.values())
        names.extend(v.get("content") if isinstance(v, dict) else v for v in value)
    return {i for i in (tokenizer.token_to_id(n) for n in names if isinstance(n, str)) if i is not None}
