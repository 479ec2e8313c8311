"""LLM yes/no rerankers (Qwen3-Reranker and causal LMs used the same way).

The prompt is the official one from the QwenLM/Qwen3-Embedding README: a system prompt, then
``<Instruct>: …\\n<Query>: …\\n<Document>: …``, then the assistant turn with an empty ``<think>``
block. Sequences are left-padded, so the last position is the answer position for every row.
Score = sigmoid(l_yes − l_no) = softmax([l_no, l_yes])[1]; the backend computes l_yes − l_no as the
last hidden state times one row (w_yes − w_no), never the full-vocabulary logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from rerankd.documents import Document
from rerankd.errors import UnsupportedModelError
from rerankd.families.base import Encoded, Family, PreparedRequest
from rerankd.families.cross_encoder import scalar_outputs
from rerankd.families.heads import YesNoRow

SYSTEM_PROMPT = (
    'Judge whether the Document meets the requirements based on the Query and the Instruct provided. '
    'Note that the answer can only be "yes" or "no".'
)
PREFIX = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
DEFAULT_MAX_LENGTH = 8192
YES_TOKEN, NO_TOKEN = "yes", "no"


def format_body(instruction: str, query: str, document: str) -> str:
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


class LlmYesNoFamily(Family):
    kind = "llm-yes-no"
    padding_side = "left"
    activation = "sigmoid"

    def __init__(self, model_dir: Path, config: dict[str, Any], tokenizer: Any, max_length: int) -> None:
        super().__init__(model_dir, config, tokenizer, max_length)
        self.yes_id = tokenizer.token_to_id(YES_TOKEN)
        self.no_id = tokenizer.token_to_id(NO_TOKEN)
        if self.yes_id is None or self.no_id is None:
            raise UnsupportedModelError(f"{model_dir}'s tokenizer has no single 'yes'/'no' tokens to score with")
        self.prefix_ids = tuple(tokenizer.encode(PREFIX, add_special_tokens=False).ids)
        self.suffix_ids = tuple(tokenizer.encode(SUFFIX, add_special_tokens=False).ids)
        self.default_instruction = DEFAULT_INSTRUCTION

    @property
    def head(self) -> YesNoRow:
        archs = [str(a) for a in self.config.get("architectures") or []]
        converted = any(a.endswith("ForSequenceClassification") for a in archs)
        return YesNoRow(self.yes_id, self.no_id, row_source="score" if converted else "lm_head")

    def prepare(
        self,
        query: Document,
        documents: Sequence[Document],
        *,
        instruction: str | None = None,
        max_doc_tokens: int | None = None,
        media: Any = None,
    ) -> PreparedRequest:
        instruction = instruction or self.default_instruction
        query_text = query.as_text()
        texts = [d.as_text() for d in documents]
        budget = self.max_length - len(self.prefix_ids) - len(self.suffix_ids)
        head = self.tokenizer.encode(format_body(instruction, query_text, ""), add_special_tokens=False)
        if len(head.ids) >= budget:
            raise self._too_long("instruction and query", len(head.ids), budget - 1)
        cut = [False] * len(texts)
        if max_doc_tokens is not None:
            # The document's own tokens are cut first, then the body is tokenized whole for exactness.
            texts, cut = self._cut_documents(texts, max_doc_tokens)
        bodies = self._encode_plain([format_body(instruction, query_text, d) for d in texts])
        sequences = []
        for body, was_cut in zip(bodies, cut):
            ids = body.ids
            truncated = was_cut or len(ids) > budget
            sequences.append(Encoded(self.prefix_ids + tuple(ids[:budget]) + self.suffix_ids, None, truncated))
        return PreparedRequest(sequences, list(range(len(sequences))), scalar_outputs)

    def document_budget(self, query: Document, instruction: str | None = None) -> int:
        head = self.tokenizer.encode(format_body(instruction or self.default_instruction, query.as_text(), ""),
                                     add_special_tokens=False)
        return self.max_length - len(self.prefix_ids) - len(self.suffix_ids) - len(head.ids)

    def _cut_documents(self, documents: Sequence[str], max_tokens: int) -> tuple[list[str], list[bool]]:
        texts, cut = [], []
        for document, enc in zip(documents, self._encode_plain(documents)):
            too_long = len(enc.ids) > max_tokens
            texts.append(self.tokenizer.decode(enc.ids[:max_tokens], skip_special_tokens=False) if too_long else document)
            cut.append(too_long)
        return texts, cut

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "default_instruction": self.default_instruction,
                "yes_token_id": self.yes_id, "no_token_id": self.no_id}
