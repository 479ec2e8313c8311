"""Packed ("unpadded") inference for CPUs: every sequence of a batch laid end to end in one row.

On a CPU, a padded batch pays twice: its matrix products run over pad tokens, and SDPA with an
arbitrary padding mask takes the slow masked path. Measured on the rerank-100 shapes (2-core
AVX512-BF16), masked flash attention took 20-44% of the time for a few percent of the FLOPs. Packed,
the linear layers see only real tokens and attention runs per sequence with no mask at all
(``is_causal`` for decoders), which is the kernel's fast path.

transformers routes attention through a registry: registering ``rerankd_packed`` and passing the
sequence boundaries as a keyword makes every layer call :func:`packed_attention`; a name unknown to
the mask registry also tells transformers to build no mask. The heads (pooler + classifier, the
yes−no row, pooling) then read each sequence's own positions.

Used for the architectures below on CPU; other models and accelerators use the padded modules.
"""

from __future__ import annotations

from typing import Any

from rerankd._optional import require
from rerankd.families import BiEncoderFamily, CrossEncoderFamily, Family, LlmYesNoFamily

torch = require("torch")
nn = torch.nn

ATTENTION_NAME = "rerankd_packed"
BOUNDARIES_KWARG = "rerankd_cu_seqlens"

# model_type → how the classification head reads the first token of each sequence.
_BERT_POOLER_HEADS = {"bert"}
_FIRST_TOKEN_HEADS = {"xlm-roberta", "roberta", "camembert", "electra"}
# Models that number positions after padding_idx (RoBERTa family) rather than from 0.
_OFFSET_POSITIONS = {"xlm-roberta", "roberta", "camembert"}
_PACKED_ENCODERS = {"bert"} | _FIRST_TOKEN_HEADS
_PACKED_DECODERS = {"qwen3", "qwen2", "llama", "mistral"}


def packed_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """SDPA per packed sequence, no mask. query (1, heads, T, d) → output (1, T, heads, d)."""
    bounds: list[int] = kwargs[BOUNDARIES_KWARG]
    causal = is_causal if is_causal is not None else bool(getattr(module, "is_causal", False))
    groups = int(getattr(module, "num_key_value_groups", 1) or 1)
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    out = torch.empty_like(query)
    for start, end in zip(bounds[:-1], bounds[1:]):
        out[:, :, start:end] = nn.functional.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], is_causal=causal, scale=scaling
        )
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, packed_attention)


def supports_packing(family: Family) -> bool:
    model_type = str(family.config.get("model_type", ""))
    if isinstance(family, LlmYesNoFamily):
        return model_type in _PACKED_DECODERS
    return model_type in _PACKED_ENCODERS


class PackedInputs:
    """A padded batch turned into one packed row: ids, per-sequence positions, boundaries."""

    def __init__(self, input_ids: Any, attention_mask: Any, token_type_ids: Any, position_offset: int) -> None:
        keep = attention_mask.bool()
        lengths = attention_mask.sum(dim=1).tolist()
        self.bounds = [0]
        for n in lengths:
            self.bounds.append(self.bounds[-1] + int(n))
        self.input_ids = input_ids[keep].unsqueeze(0)
        self.token_type_ids = token_type_ids[keep].unsqueeze(0) if token_type_ids is not None else None
        self.position_ids = (
            torch.cat([torch.arange(int(n)) for n in lengths]).unsqueeze(0) + position_offset
        ).to(input_ids.device)
        self.first = torch.tensor(self.bounds[:-1], device=input_ids.device)
        self.last = torch.tensor(self.bounds[1:], device=input_ids.device) - 1
        self.segment = torch.repeat_interleave(torch.arange(len(lengths), device=input_ids.device), torch.tensor(lengths, device=input_ids.device))

    def model_kwargs(self) -> dict[str, Any]:
        kwargs = {"input_ids": self.input_ids, "position_ids": self.position_ids, BOUNDARIES_KWARG: self.bounds}
        if self.token_type_ids is not None:
            kwargs["token_type_ids"] = self.token_type_ids
        return kwargs


class PackedPairClassifierScore(nn.Module):
    """:class:`~rerankd.backends.torch_modules.PairClassifierScore`, computed on packed sequences."""

    def __init__(self, model: Any, num_labels: int) -> None:
        super().__init__()
        self.model = model
        self.num_labels = num_labels
        model_type = model.config.model_type
        self.offset = int(model.config.pad_token_id) + 1 if model_type in _OFFSET_POSITIONS else 0
        self.bert_pooler = model_type in _BERT_POOLER_HEADS

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
        packed = PackedInputs(input_ids, attention_mask, token_type_ids, self.offset)
        hidden = self.model.base_model(**packed.model_kwargs()).last_hidden_state[0]
        first = hidden[packed.first].unsqueeze(1)  # (sequences, 1, hidden): what the heads index [:, 0]
        if self.bert_pooler:
            logits = self.model.classifier(self.model.base_model.pooler(first))
        else:
            logits = self.model.classifier(first)
        logits = logits.float()
        return logits[:, 0] if self.num_labels == 1 else logits[:, 1] - logits[:, 0]


class PackedLastTokenYesNo(nn.Module):
    """:class:`~rerankd.backends.torch_modules.LastTokenYesNo` on packed sequences (each sequence's own last token)."""

    def __init__(self, base: Any, head_row: Any) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("head_row", head_row.float().reshape(-1), persistent=False)

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        packed = PackedInputs(input_ids, attention_mask, None, 0)
        hidden = self.base(**packed.model_kwargs(), use_cache=False).last_hidden_state[0]
        return hidden[packed.last].float() @ self.head_row


class PackedPooledEmbedding(nn.Module):
    """:class:`~rerankd.backends.torch_modules.PooledEmbedding` on packed sequences."""

    def __init__(self, model: Any, pooling: str, normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.normalize = normalize
        model_type = model.config.model_type
        self.offset = int(model.config.pad_token_id) + 1 if model_type in _OFFSET_POSITIONS else 0

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        packed = PackedInputs(input_ids, attention_mask, None, self.offset)
        hidden = self.model(**packed.model_kwargs()).last_hidden_state[0].float()
        rows = len(packed.bounds) - 1
        if self.pooling == "cls":
            pooled = hidden[packed.first]
        elif self.pooling == "lasttoken":
            pooled = hidden[packed.last]
        elif self.pooling == "max":
            pooled = torch.full((rows, hidden.shape[1]), float("-inf")).index_reduce_(0, packed.segment, hidden, "amax")
        else:
            summed = torch.zeros(rows, hidden.shape[1]).index_add_(0, packed.segment, hidden)
            counts = torch.tensor([b - a for a, b in zip(packed.bounds[:-1], packed.bounds[1:])], dtype=hidden.dtype).unsqueeze(1)
            pooled = summed / (counts.sqrt() if self.pooling == "mean_sqrt_len" else counts)
        return nn.functional.normalize(pooled, p=2, dim=1) if self.normalize else pooled


def packed_module(family: Family, padded: Any) -> Any:
    """The packed twin of a padded module built by ``build_module`` (same weights, no copy)."""
    _register()
    if isinstance(family, CrossEncoderFamily):
        model, module = padded.model, PackedPairClassifierScore(padded.model, family.num_labels)
    elif isinstance(family, LlmYesNoFamily):
        model, module = padded.base, PackedLastTokenYesNo(padded.base, padded.head_row)
    elif isinstance(family, BiEncoderFamily):
        model, module = padded.model, PackedPooledEmbedding(padded.model, padded.pooling, padded.normalize)
    else:
        raise ValueError(f"no packed module for {family.kind}")
    model.config._attn_implementation = ATTENTION_NAME
    return module.eval()
