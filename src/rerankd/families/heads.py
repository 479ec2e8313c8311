"""What a family's model ends in, declared by the family and followed by every backend.

A backend never asks which family it runs: it reads ``family.head`` and builds the matching graph
(torch modules, ONNX export, the numpy head of a hub ONNX graph) from the head's ``kind``.

* :class:`PairLogit` — a sequence classifier reads (query, document) as one pair; raw score = the
  logit (1 label) or the positive-vs-negative log-odds (2 labels).
* :class:`YesNoRow` — a language model's last hidden state times one row (w_yes − w_no); the
  vocabulary logits are never computed.
* :class:`PooledEmbedding` — one pooled (optionally L2-normalized) vector per sequence; the family
  compares them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

HeadKind = Literal["pair-logit", "yes-no-row", "pooled-embedding"]


@dataclass(frozen=True)
class PairLogit:
    num_labels: int
    kind: HeadKind = "pair-logit"
    output: Literal["scalar", "vector"] = "scalar"


@dataclass(frozen=True)
class YesNoRow:
    yes_id: int
    no_id: int
    #: Where w_yes − w_no is read: a causal LM's ``lm_head`` (or tied embeddings), or the ``score``
    #: row of its converted 1-label ``*ForSequenceClassification`` form.
    row_source: Literal["lm_head", "score"] = "lm_head"
    #: The model reads images and video too (a vision tower before the language model, e.g.
    #: Qwen3-VL): sequences carry their media and 3-row M-RoPE positions in ``Encoded.extras``.
    vision: bool = False
    kind: HeadKind = "yes-no-row"
    output: Literal["scalar", "vector"] = "scalar"


@dataclass(frozen=True)
class PooledEmbedding:
    pooling: str
    normalize: bool
    kind: HeadKind = "pooled-embedding"
    output: Literal["scalar", "vector"] = "vector"


Head = PairLogit | YesNoRow | PooledEmbedding
