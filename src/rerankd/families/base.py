"""What every model family shares: how a request becomes token sequences, and how outputs become scores.

A family is torch-free: it owns the tokenizer, the prompt format, the modalities it reads and the
head its model ends in (:mod:`rerankd.families.heads`). A backend (torch, ONNX) turns a batch of
sequences into one output per sequence, following the declared head: a scalar for pair scorers, a
vector for bi-encoders. :meth:`Family.prepare` returns a :class:`PreparedRequest` whose ``finish``
turns those outputs back into one raw score per document.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np

from rerankd.documents import Document
from rerankd.errors import InputTooLargeError, ModelError
from rerankd.families.heads import Head

FamilyKind = Literal["cross-encoder", "llm-yes-no", "bi-encoder", "vision-language"]


@dataclass(frozen=True)
class Encoded:
    """One token sequence ready for a backend.

    Attributes:
        extras: per-sequence inputs beyond the tokens (e.g. pixel values, image grids, 3-row
            position ids of a vision-language model); a backend that needs them collates them.
        cost: what the sequence costs the batch planner, when that is more than its tokens (image
            tokens run a vision tower too); ``None`` means ``len(input_ids)``.
    """

    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...] | None = None
    truncated: bool = False
    extras: Mapping[str, Any] | None = None
    cost: int | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def planned_cost(self) -> int:
        return self.cost if self.cost is not None else len(self.input_ids)


@dataclass(frozen=True)
class Padding:
    """How a padded backend lays a batch out: pad id, side, and whether segment ids are fed."""

    pad_id: int
    side: Literal["left", "right"]
    token_type_ids: bool


@dataclass(frozen=True)
class PreparedRequest:
    """The sequences of one (query, documents) request and how to turn their outputs into raw scores.

    ``doc_sequences[i]`` is the sequence whose length and truncation describe document ``i``.
    """

    sequences: list[Encoded]
    doc_sequences: list[int]
    finish: Callable[[np.ndarray], np.ndarray]

    @property
    def total_tokens(self) -> int:
        return sum(len(s) for s in self.sequences)


def read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


def load_tokenizer(model_dir: Path) -> Any:
    """The model's fast (Rust) tokenizer, with no truncation or padding of its own.

    transformers' AutoTokenizer is preferred because it is what the reference implementations use
    (it may adjust the tokenizer.json it reads); without transformers, or where it cannot read the
    model's tokenizer files, tokenizer.json is read directly.
    """
    tokenizer = None
    try:
        from transformers import AutoTokenizer
    except ImportError:
        AutoTokenizer = None  # type: ignore[assignment]
    if AutoTokenizer is not None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir)).backend_tokenizer
        except Exception as exc:  # noqa: BLE001 - any failure here means "no usable tokenizer"
            # transformers 4.x cannot read the tokenizer_config.json that 5.x writes (its
            # extra_special_tokens became a list); tokenizer.json itself reads the same on both.
            if not (model_dir / "tokenizer.json").is_file():
                raise ModelError(f"could not load the tokenizer of {model_dir}: {exc}") from exc
    if tokenizer is None:
        from tokenizers import Tokenizer

        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise ModelError(f"{model_dir} has no tokenizer.json; install transformers (pip install 'rerankd[torch]') to convert its tokenizer")
        tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": sigmoid,
    "identity": lambda x: np.asarray(x, dtype=np.float64),
    "tanh": lambda x: np.tanh(np.asarray(x, dtype=np.float64)),
}


class Family(ABC):
    """A reranker family: tokenization, prompt and score semantics, independent of the backend."""

    kind: FamilyKind
    padding_side: Literal["left", "right"] = "right"
    activation: str = "sigmoid"
    #: The parts of a document this family reads (see :mod:`rerankd.documents`).
    modalities: frozenset[str] = frozenset({"text"})

    def __init__(self, model_dir: Path, config: dict[str, Any], tokenizer: Any, max_length: int) -> None:
        self.model_dir = model_dir
        self.config = config
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_token_id = self._pad_id()

    @property
    @abstractmethod
    def head(self) -> Head:
        """What the model ends in; every backend builds its graph from this."""

    @property
    def output(self) -> Literal["scalar", "vector"]:
        """``scalar``: one float per sequence; ``vector``: one embedding per sequence."""
        return self.head.output

    @property
    def uses_token_type_ids(self) -> bool:
        return False

    @property
    def padding(self) -> Padding:
        return Padding(self.pad_token_id, self.padding_side, self.uses_token_type_ids)

    def settings(self) -> dict[str, Any]:
        """Every family setting that changes a score (part of the model fingerprint)."""
        return {"max_length": self.max_length, "activation": self.activation}

    def _pad_id(self) -> int:
        padding = self.tokenizer.padding
        if padding and padding.get("pad_id") is not None:
            return int(padding["pad_id"])
        pad = self.config.get("pad_token_id")
        if isinstance(pad, int):
            return pad
        for token in ("<pad>", "[PAD]", "<|endoftext|>"):
            tid = self.tokenizer.token_to_id(token)
            if tid is not None:
                return int(tid)
        return 0

    @abstractmethod
    def prepare(
        self,
        query: Document,
        documents: Sequence[Document],
        *,
        instruction: str | None = None,
        max_doc_tokens: int | None = None,
        media: Any = None,
    ) -> PreparedRequest:
        """Tokenize one validated request into sequences (documents are truncated, the query is kept).

        The documents hold only the modalities in :attr:`modalities` (the pipeline checked).
        ``media`` is the request's :class:`rerankd.media.settings.MediaSettings` (fetch policy, video
        sampling); families that read only text ignore it.
        """

    def document_budget(self, query: Document, instruction: str | None = None) -> int:
        """Tokens of a document's own text that fit one sequence beside this query (for chunking)."""
        return self.max_length

    def text_token_ids(self, text: str) -> list[int]:
        """A text's tokens, no special tokens (what document windows are cut from)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids back to text (a document window, re-tokenized with its prompt by :meth:`prepare`)."""
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=False))

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """The model's activation: raw scores → normalized relevance scores."""
        return ACTIVATIONS[self.activation](raw)

    def describe(self) -> dict[str, Any]:
        return {"family": self.kind, "head": self.head.kind, "modalities": sorted(self.modalities), **self.settings()}

    # -- helpers shared by the families -------------------------------------------------------------

    def _encode_plain(self, texts: Sequence[str]) -> list[Any]:
        return list(self.tokenizer.encode_batch(list(texts), add_special_tokens=False))

    def _encode_with_specials(
        self, texts: Sequence[str], budget: int, first: Any = None, type_ids: bool = False
    ) -> list[Encoded]:
        """Each text cut to ``budget`` tokens, then wrapped in the model's special tokens.

        With ``first`` (an encoding of the query), each text becomes the second sequence of a pair.
        """
        sequences = []
        for enc in self._encode_plain(texts):
            truncated = len(enc.ids) > budget
            if truncated:
                enc.truncate(budget)
            full = self.tokenizer.post_process(first, enc, add_special_tokens=True) if first is not None else (
                self.tokenizer.post_process(enc, None, add_special_tokens=True)
            )
            sequences.append(Encoded(tuple(full.ids), tuple(full.type_ids) if type_ids else None, truncated))
        return sequences

    def _too_long(self, what: str, tokens: int, limit: int) -> InputTooLargeError:
        return InputTooLargeError(
            f"the {what} is {tokens} tokens but this model takes at most {limit} tokens for it "
            f"(max_length {self.max_length}); shorten the {what} or raise max_length"
        )


def finite_or_raise(values: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(values)):
        bad = int(np.sum(~np.isfinite(values)))
        raise ModelError(f"the model produced {bad} non-finite score(s); try dtype float32")
    return values


def positive_int(value: Any, default: int) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        return default
    return v if 0 < v < 10**7 else default


__all__ = ["Encoded", "Padding", "PreparedRequest", "Family", "FamilyKind", "load_tokenizer", "read_json", "sigmoid"]
