"""The official Qwen3-VL-Reranker computation, as the oracle for rerankd's vision-language family.

This follows QwenLM/Qwen3-VL-Embedding ``src/models/qwen3_vl_reranker.py`` step by step, for one
(query, document) pair at a time as it ships (``process`` loops over pairs):

1. ``format_mm_instruction``: a system message, then one user message whose content items are
   ``<Instruct>: {instruction}``, ``<Query>:``, the query's videos, images, texts (or ``NULL``),
   ``\\n<Document>:``, the document's videos, images, texts (or ``NULL``).
2. ``apply_chat_template(..., add_generation_prompt=True)`` renders it (items concatenated as is).
3. The processor expands each image placeholder to grid_h·grid_w/merge² ``<|image_pad|>`` and each
   video to ``<t seconds><|vision_start|><|video_pad|>…<|vision_end|>`` per temporal patch, then
   tokenizes the whole string in one pass.
4. ``truncate_tokens_optimized`` on all tokens but the last 5: special tokens are all kept, plain
   tokens are kept in order up to ``max_length − #special``; the last 5 are appended again.
5. ``lm.model(**inputs).last_hidden_state[:, -1]`` times a Linear whose weight is
   ``lm_head[yes] − lm_head[no]``; the score is its sigmoid.

Two substitutions, because torchvision does not import here: images go through transformers'
``Qwen2VLImageProcessor`` (its numpy/PIL backend, ``Qwen2VLImageProcessorPil``) with ``do_resize=False`` on the image that
qwen_vl_utils' ``fetch_image`` would give (RGB, smart_resize, bicubic — reproduced with Pillow
below); a video given as frames is the array rerankd's media layer makes (its own tests check it
against the reference's rules), expanded into the prompt as Qwen3VLProcessor does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

SYSTEM = ('Judge whether the Document meets the requirements based on the Query and the Instruct provided. '
          'Note that the answer can only be "yes" or "no".')
DEFAULT_INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."
MAX_LENGTH = 10240
MIN_PIXELS = 4 * 32 * 32
MAX_PIXELS = 1800 * 32 * 32


@dataclass
class Side:
    """One side of a pair as the reference's ``format_mm_content`` takes it."""

    texts: Sequence[str] = ()
    images: Sequence[Any] = ()  # paths or PIL images
    videos: Sequence[Any] = ()  # rerankd ProcessedVideo (frame lists, already sampled and resized)


@dataclass
class ReferenceInputs:
    text: str  # the rendered prompt, placeholders expanded
    input_ids: list[int]
    pixel_values: np.ndarray | None
    image_grid_thw: np.ndarray | None
    truncated: bool


def fetch_image(source: Any) -> Any:
    """qwen_vl_utils.fetch_image: RGB (RGBA on white), smart_resize to multiples of 32, bicubic."""
    import math

    from PIL import Image

    image = Image.open(source) if not isinstance(source, Image.Image) else source
    if image.mode == "RGBA":
        white = Image.new("RGB", image.size, (255, 255, 255))
        white.paste(image, mask=image.split()[3])
        image = white
    else:
        image = image.convert("RGB")
    w, h = image.size
    f = 32
    hb, wb = max(f, round(h / f) * f), max(f, round(w / f) * f)
    if hb * wb > MAX_PIXELS:
        beta = math.sqrt((h * w) / MAX_PIXELS)
        hb, wb = max(f, math.floor(h / beta / f) * f), max(f, math.floor(w / beta / f) * f)
    elif hb * wb < MIN_PIXELS:
        beta = math.sqrt(MIN_PIXELS / (h * w))
        hb, wb = math.ceil(h * beta / f) * f, math.ceil(w * beta / f) * f
    return image.resize((wb, hb))


class Qwen3VLRerankerReference:
    """The reference reranker over a model directory (weights via Qwen3VLForConditionalGeneration)."""

    def __init__(self, model_dir: Path, max_length: int = MAX_LENGTH, dtype: Any = torch.float32) -> None:
        from transformers import AutoTokenizer, Qwen2VLImageProcessorPil, Qwen3VLForConditionalGeneration

        lm = Qwen3VLForConditionalGeneration.from_pretrained(str(model_dir), dtype=dtype).eval()
        self.model = lm.model
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.chat_template = (Path(model_dir) / "chat_template.jinja").read_text()
        self.image_processor = Qwen2VLImageProcessorPil(patch_size=16, temporal_patch_size=2, merge_size=2,
                                                     image_mean=[0.5] * 3, image_std=[0.5] * 3)
        self.max_length = max_length
        vocab = self.tokenizer.get_vocab()
        w = lm.lm_head.weight.data
        self.score_linear = torch.nn.Linear(w.shape[1], 1, bias=False)
        with torch.no_grad():
            self.score_linear.weight[0] = w[vocab["yes"]] - w[vocab["no"]]
        self.score_linear.to(lm.dtype)
        self.config = lm.config

    # -- format_mm_instruction ---------------------------------------------------------------------
    @staticmethod
    def content(side: Side, prefix: str) -> list[dict]:
        items: list[dict] = [{"type": "text", "text": prefix}]
        if not side.texts and not side.images and not side.videos:
            return items + [{"type": "text", "text": "NULL"}]
        items += [{"type": "video", "video": v} for v in side.videos]
        items += [{"type": "image", "image": i} for i in side.images]
        items += [{"type": "text", "text": t} for t in side.texts]
        return items

    def messages(self, query: Side, document: Side, instruction: str | None = None) -> list[dict]:
        contents = [{"type": "text", "text": "<Instruct>: " + (instruction or DEFAULT_INSTRUCTION)}]
        contents += self.content(query, "<Query>:") + self.content(document, "\n<Document>:")
        return [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
                {"role": "user", "content": contents}]

    # -- tokenize ---------------------------------------------------------------------------------
    def inputs(self, query: Side, document: Side, instruction: str | None = None) -> ReferenceInputs:
        text = self.tokenizer.apply_chat_template(self.messages(query, document, instruction), tokenize=False,
                                                  add_generation_prompt=True, chat_template=self.chat_template)
        images = [fetch_image(i) for i in [*query.images, *document.images]]
        # The processor's order is the order in the text: query's images, then the document's.
        pixel_values = grids = None
        if images:
            out = self.image_processor(images=images, do_resize=False, return_tensors="np")
            pixel_values, grids = out["pixel_values"], out["image_grid_thw"]
            pieces = text.split("<|image_pad|>")
            text = pieces[0] + "".join("<|image_pad|>" * int(g.prod() // 4) + rest for g, rest in zip(grids, pieces[1:]))
        videos = [*query.videos, *document.videos]
        if videos:
            pieces = text.split("<|vision_start|><|video_pad|><|vision_end|>")
            text = pieces[0] + "".join(v.prompt() + rest for v, rest in zip(videos, pieces[1:]))
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        body, tail = ids[:-5], ids[-5:]
        truncated = len(body) > self.max_length
        if truncated:
            special = set(self.tokenizer.all_special_ids)
            keep = self.max_length - sum(1 for t in body if t in special)
            kept, out_ids = 0, []
            for t in body:
                if t in special:
                    out_ids.append(t)
                elif kept < keep:
                    out_ids.append(t)
                    kept += 1
            body = out_ids
        return ReferenceInputs(text, body + tail, pixel_values, grids, truncated)

    # -- compute_scores -----------------------------------------------------------------------------
    @torch.no_grad()
    def logit(self, query: Side, document: Side, instruction: str | None = None) -> float:
        """The raw yes−no logit (the reference's score is its sigmoid)."""
        r = self.inputs(query, document, instruction)
        videos = [*query.videos, *document.videos]
        ids = torch.tensor([r.input_ids])
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                  "mm_token_type_ids": (ids == self.config.image_token_id).int()
                                  + 2 * (ids == self.config.video_token_id).int()}
        if r.pixel_values is not None:
            kwargs["pixel_values"] = torch.from_numpy(r.pixel_values)
            kwargs["image_grid_thw"] = torch.from_numpy(r.image_grid_thw)
        if videos:
            kwargs["pixel_values_videos"] = torch.from_numpy(np.concatenate([v.pixel_values for v in videos]))
            kwargs["video_grid_thw"] = torch.tensor([v.grid_thw for v in videos])
        self.model.rope_deltas = None
        hidden = self.model(**kwargs).last_hidden_state[:, -1]
        return float(self.score_linear(hidden).float()[0, 0])

    def score(self, query: Side, document: Side, instruction: str | None = None) -> float:
        return float(torch.sigmoid(torch.tensor(self.logit(query, document, instruction))))
