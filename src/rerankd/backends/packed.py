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
PREFIX_KWARG = "rerankd_shared_prefix"
# Below this many shared tokens, an extra pass for the prefix costs more than it saves.
MIN_SHARED_PREFIX = 16

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
    """SDPA per packed sequence, no mask. query (1, heads, T, d) → output (1, T, heads, d).

    With a :class:`SharedPrefix` in ``kwargs``, a decoder either records each layer's keys and values
    of the prefix, or attends to the recorded prefix as well as to its own sequence.
    """
    bounds: list[int] = kwargs[BOUNDARIES_KWARG]
    prefix: SharedPrefix | None = kwargs.get(PREFIX_KWARG)
    causal = is_causal if is_causal is not None else bool(getattr(module, "is_causal", False))
    groups = int(getattr(module, "num_key_value_groups", 1) or 1)
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    if prefix is not None and prefix.recording:
        prefix.layers[module.layer_idx] = (key, value)
    elif prefix is not None:
        return _attend_with_prefix(query, key, value, bounds, prefix.layers[module.layer_idx], scaling), None
    out = torch.empty_like(query)
    for start, end in zip(bounds[:-1], bounds[1:]):
        out[:, :, start:end] = nn.functional.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], is_causal=causal, scale=scaling
        )
    return out.transpose(1, 2).contiguous(), None


class SharedPrefix:
    """Keys and values of a prefix every sequence of a batch starts with, per layer."""

    def __init__(self) -> None:
        self.layers: dict[int, tuple[Any, Any]] = {}
        self.recording = True


def _flash_with_lse(query: Any, key: Any, value: Any, causal: bool, scaling: float | None) -> tuple[Any, Any]:
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, 0.0, causal, scale=scaling)[:2]
    return out, lse


def _attend_with_prefix(query: Any, key: Any, value: Any, bounds: list[int], prefix_kv: tuple[Any, Any], scaling: float | None) -> Any:
    """Causal attention over [shared prefix; own tokens], as two mask-free parts merged by log-sum-exp.

    Every token sees the whole prefix (one call for all sequences) and the causal part of its own
    sequence (one call each). The softmax over the union is the two partial results weighted by
    exp(lse_part − lse_total); for two parts the prefix's weight is sigmoid(lse_prefix − lse_own),
    so the merge is one lerp. Exact up to rounding.
    """
    on_prefix, lse_prefix = _flash_with_lse(query, prefix_kv[0], prefix_kv[1], False, scaling)
    out = torch.empty_like(query)
    for start, end in zip(bounds[:-1], bounds[1:]):
        own, lse_own = _flash_with_lse(query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], True, scaling)
        weight = torch.sigmoid(lse_prefix[:, :, start:end] - lse_own).unsqueeze(-1).to(own.dtype)
        out[:, :, start:end] = torch.lerp(own, on_prefix[:, :, start:end], weight)
    return out.transpose(1, 2).contiguous()


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, packed_attention)


def supports_packing(family: Family) -> bool:
    model_type = str(family.config.get("model_type", ""))
    if isinstance(family, LlmYesNoFamily):
        return model_type in _PACKED_DECODERS
    return model_type in _PACKED_ENCODERS


def shared_prefix_length(input_ids: Any, attention_mask: Any) -> int:
    """Tokens that every row of a left-padded batch starts with (leaving each row at least one of its own)."""
    lengths = attention_mask.sum(dim=1)
    shortest = int(lengths.min())
    width = input_ids.shape[1]
    starts = width - lengths  # left padding: real tokens end every row
    heads = torch.stack([input_ids[row, int(s) : int(s) + shortest] for row, s in enumerate(starts)])
    same = (heads == heads[0]).all(dim=0)
    differing = (~same).nonzero()
    common = int(differing[0]) if len(differing) else shortest
    return min(common, shortest - 1)


class PackedInputs:
    """A padded batch turned into one packed row: ids, per-sequence positions, boundaries.

    ``skip`` leading tokens of every row are left out (a shared prefix computed once); positions
    still count them.
    """

    def __init__(self, input_ids: Any, attention_mask: Any, token_type_ids: Any, position_offset: int, skip: int = 0) -> None:
        keep = attention_mask.bool()
        if skip:
            keep = keep & (attention_mask.cumsum(dim=1) > skip)
            attention_mask = keep.long()
        position_offset += skip
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
        shared = shared_prefix_length(input_ids, attention_mask) if input_ids.shape[0] > 1 else 0
        if shared < MIN_SHARED_PREFIX:
            packed = PackedInputs(input_ids, attention_mask, None, 0)
            hidden = self.base(**packed.model_kwargs(), use_cache=False).last_hidden_state[0]
            return hidden[packed.last].float() @ self.head_row
        # The prompt, instruction and query are the same for every document of a request: their
        # keys and values are computed once and every document attends to them.
        prefix = SharedPrefix()
        row0 = input_ids[0, input_ids.shape[1] - int(attention_mask[0].sum()) :][:shared]
        self.base(input_ids=row0.unsqueeze(0), position_ids=torch.arange(shared).unsqueeze(0),
                  use_cache=False, **{BOUNDARIES_KWARG: [0, shared], PREFIX_KWARG: prefix})
        prefix.recording = False
        rest = PackedInputs(input_ids, attention_mask, None, 0, skip=shared)
        hidden = self.base(**rest.model_kwargs(), use_cache=False, **{PREFIX_KWARG: prefix}).last_hidden_state[0]
        return hidden[rest.last].float() @ self.head_row


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
