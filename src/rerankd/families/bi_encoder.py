"""Bi-encoders in the sentence-transformers layout (modules.json + a Pooling module).

The query and each document are embedded separately; score = cosine of the normalized embeddings.
The backend returns one pooled (and, where the model says so, normalized) vector per sequence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rerankd.documents import Document
from rerankd.errors import UnsupportedModelError
from rerankd.families.base import Encoded, Family, PreparedRequest, read_json
from rerankd.families.heads import PooledEmbedding

POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len", "lasttoken")


def read_modules(model_dir: Path) -> list[dict[str, Any]]:
    path = model_dir / "modules.json"
    if not path.is_file():
        return []
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []


def pooling_dir(model_dir: Path) -> Path | None:
    for module in read_modules(model_dir):
        if str(module.get("type", "")).endswith("Pooling"):
            return model_dir / str(module.get("path", ""))
    return None


def pooling_mode(model_dir: Path) -> str:
    directory = pooling_dir(model_dir)
    cfg = read_json(directory / "config.json") if directory else {}
    if cfg.get("pooling_mode"):
        mode = str(cfg["pooling_mode"])
    else:
        modes = [m for m in POOLING_MODES if cfg.get(f"pooling_mode_{m}_tokens") or cfg.get(f"pooling_mode_{m}_token")]
        if len(modes) > 1:
            raise UnsupportedModelError(f"{model_dir} concatenates pooling modes {modes}; rerankd supports one")
        mode = modes[0] if modes else "mean"
    if mode not in POOLING_MODES:
        raise UnsupportedModelError(f"{model_dir} uses pooling {mode!r}; rerankd supports {list(POOLING_MODES)}")
    return mode


class BiEncoderFamily(Family):
    kind = "bi-encoder"
    padding_side = "right"
    activation = "identity"

    def __init__(self, model_dir: Path, config: dict[str, Any], tokenizer: Any, max_length: int) -> None:
        super().__init__(model_dir, config, tokenizer, max_length)
        self.pooling = pooling_mode(model_dir)
        self.normalize_embeddings = any(str(m.get("type", "")).endswith("Normalize") for m in read_modules(model_dir))
        self._n_special = tokenizer.num_special_tokens_to_add(is_pair=False)

    @property
    def head(self) -> PooledEmbedding:
        return PooledEmbedding(self.pooling, self.normalize_embeddings)

    def encode_texts(self, texts: Sequence[str], max_tokens: int | None = None) -> list[Encoded]:
        """Tokenize texts for embedding, each truncated to the model's max length (or ``max_tokens``)."""
        budget = self.max_length - self._n_special
        if max_tokens is not None:
            budget = min(budget, max_tokens)
        return self._encode_with_specials(texts, budget)

    def prepare(
        self,
        query: Document,
        documents: Sequence[Document],
        *,
        instruction: str | None = None,
        max_doc_tokens: int | None = None,
        media: Any = None,
    ) -> PreparedRequest:
        sequences = self.encode_texts([query.as_text()]) + self.encode_texts([d.as_text() for d in documents], max_doc_tokens)
        return PreparedRequest(sequences, list(range(1, len(sequences))), cosine_to_first)

    def document_budget(self, query: Document, instruction: str | None = None) -> int:
        return self.max_length - self._n_special

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "pooling": self.pooling, "normalize": self.normalize_embeddings}


def cosine_to_first(outputs: np.ndarray) -> np.ndarray:
    """Cosine similarity of rows 1.. to row 0 (the query)."""
    vectors = np.asarray(outputs, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.maximum(norms, 1e-12)
    return unit[1:] @ unit[0]
