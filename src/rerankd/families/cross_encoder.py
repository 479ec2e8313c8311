"""Cross-encoders: any ``*ForSequenceClassification`` encoder that reads (query, document) as a pair.

Raw score = the logit (one label) or the positive-vs-negative log-odds (two labels, so that the
sigmoid of it is the softmax probability of the positive label). The normalized score applies the
activation the model declares (sentence-transformers' ``activation_fn``), sigmoid by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rerankd.documents import Document
from rerankd.errors import UnsupportedModelError
from rerankd.families.base import Family, PreparedRequest, read_json
from rerankd.families.heads import PairLogit

# Class paths sentence-transformers writes for the activation, mapped to rerankd's names.
_ACTIVATION_NAMES = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh",
}


def declared_activation(model_dir: Path, config: dict[str, Any]) -> str | None:
    """The activation a sentence-transformers CrossEncoder declares, in any of its save formats."""
    candidates = [
        read_json(model_dir / "config_sentence_transformers.json").get("activation_fn"),
        (config.get("sentence_transformers") or {}).get("activation_fn"),
        config.get("sbert_ce_default_activation_function"),
    ]
    for path in candidates:
        if path:
            name = _ACTIVATION_NAMES.get(str(path))
            if name is None:
                raise UnsupportedModelError(
                    f"{model_dir} declares activation {path!r}; rerankd supports {sorted(_ACTIVATION_NAMES)}"
                )
            return name
    return None


class CrossEncoderFamily(Family):
    kind = "cross-encoder"
    padding_side = "right"

    def __init__(self, model_dir: Path, config: dict[str, Any], tokenizer: Any, max_length: int) -> None:
        super().__init__(model_dir, config, tokenizer, max_length)
        # transformers leaves id2label out of config.json when it is its default: two labels.
        self.num_labels = len(config.get("id2label") or {}) or int(config.get("num_labels", 2) or 2)
        if self.num_labels not in (1, 2):
            raise UnsupportedModelError(
                f"{model_dir} is a classifier with {self.num_labels} labels; rerankd scores models with 1 label "
                "(a relevance logit) or 2 labels (negative, positive)"
            )
        declared = declared_activation(model_dir, config)
        # Two-label models: raw is the positive-vs-negative log-odds, so sigmoid(raw) == softmax[1].
        self.activation = declared or "sigmoid"
        self._n_special = tokenizer.num_special_tokens_to_add(is_pair=True)
        # Segment ids matter only to models trained with more than one segment type (BERT, ELECTRA).
        self._type_ids = int(config.get("type_vocab_size", 0) or 0) > 1

    @property
    def head(self) -> PairLogit:
        return PairLogit(self.num_labels)

    @property
    def uses_token_type_ids(self) -> bool:
        return self._type_ids

    def prepare(
        self,
        query: Document,
        documents: Sequence[Document],
        *,
        instruction: str | None = None,
        max_doc_tokens: int | None = None,
        media: Any = None,
    ) -> PreparedRequest:
        q = self.tokenizer.encode(query.as_text(), add_special_tokens=False)
        budget = self.max_length - self._n_special - len(q.ids)
        if budget < 1:
            raise self._too_long("query", len(q.ids), self.max_length - self._n_special - 1)
        if max_doc_tokens is not None:
            budget = min(budget, max_doc_tokens)
        sequences = self._encode_with_specials([d.as_text() for d in documents], budget, first=q, type_ids=self._type_ids)
        return PreparedRequest(sequences, list(range(len(sequences))), scalar_outputs)

    def document_budget(self, query: Document, instruction: str | None = None) -> int:
        return self.max_length - self._n_special - len(self.text_token_ids(query.as_text()))

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "labels": self.num_labels}


def scalar_outputs(outputs: np.ndarray) -> np.ndarray:
    return np.asarray(outputs, dtype=np.float64).reshape(-1)
