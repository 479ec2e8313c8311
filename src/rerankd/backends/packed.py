"""Packed ("unpadded") inference for CPUs: every sequence of a batch laid end to end in one row.

On a CPU, a padded batch pays twice: its matrix products run over pad tokens, and SDPA with an
arbitrary padding mask takes the slow masked path (on the rerank-100 shapes, a large share of the
time for a few percent of the FLOPs: ``benchmarks/cpu_backends.py --profile``). Packed, the linear layers see only real tokens and attention runs per sequence with no mask at all
(``is_causal`` for decoders), which is the kernel's fast path.

transformers routes attention through a registry: registering ``rerankd_packed`` makes every layer
call :func:`packed_attention`, and a name unknown to the mask registry also tells transformers to
build no mask. The sequence boundaries (and a shared prefix) reach it through a context variable set
around the model call, not through ``model(**kwargs)``: older transformers' encoders take no extra
keywords (4.57's ``BertModel.forward`` raises on them). The heads (pooler + classifier, the yes−no
row, pooling) then read each sequence's own positions, with the head pieces of
:mod:`rerankd.backends.torch_modules`.

The packed modules take the sequences themselves: the batch is never padded to be unpadded again.
Used for the architectures below on CPU. On CUDA the same modules run with torch's varlen flash
attention (:func:`attention_kernel`), only when asked for (``packed=True``, ``--packed on``): that
path has not been verified on a GPU yet (``benchmarks/gpu_check.py`` is the check), so the padded
modules stay the default there and on MPS.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from typing import Any, Callable, Iterator, Sequence

from rerankd._optional import require
from rerankd.backends import cpu_attention
from rerankd.backends.torch_modules import head_key, pair_score, pool
from rerankd.families import Encoded, Family

torch = require("torch")
nn = torch.nn

ATTENTION_NAME = "rerankd_packed"
# Below this many shared tokens, an extra pass for the prefix costs more than it saves.
MIN_SHARED_PREFIX = 16

# model_type → how the classification head reads the first token of each sequence.
_BERT_POOLER_HEADS = {"bert"}
_FIRST_TOKEN_HEADS = {"xlm-roberta", "roberta", "camembert", "electra"}
# Models that number positions after padding_idx (RoBERTa family) rather than from 0.
_OFFSET_POSITIONS = {"xlm-roberta", "roberta", "camembert"}
_PACKED_ENCODERS = {"bert"} | _FIRST_TOKEN_HEADS
_PACKED_DECODERS = {"qwen3", "qwen2", "llama", "mistral", "qwen3_vl"}


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
    """Attention per packed sequence, no mask. query (1, heads, T, d) → output (1, T, heads, d).

    On CUDA in fp16/bf16, one call of torch's varlen flash attention for the whole batch
    (:func:`attention_kernel`); elsewhere SDPA per sequence. With a :class:`SharedPrefix` in the
    packing context, a decoder either records each layer's keys and values of the prefix, or attends
    to the recorded prefix as well as to its own sequence.
    """
    context = _PACKING.get()
    if context is None:
        raise RuntimeError("packed attention ran outside a packing() context")
    bounds, prefix, first_rows = context
    if first_rows is not None and first_rows.attention is module:
        # One query per sequence, its first token, against all of the sequence's keys.
        return sdpa_per_sequence(query, first_rows.key, first_rows.value, bounds, False, scaling,
                                 query_bounds=list(range(len(bounds)))), None
    causal = is_causal if is_causal is not None else bool(getattr(module, "is_causal", False))
    groups = int(getattr(module, "num_key_value_groups", 1) or 1)
    if prefix is None and attention_kernel(query.device.type, query.dtype, varlen_parameters()) == "varlen":
        options = varlen_options(varlen_parameters() or frozenset(), causal=causal, scaling=scaling,
                                 head_dim=query.shape[-1], groups=groups)
        if options is not None:
            return _varlen_attention(query, key, value, bounds, groups, options), None
    if prefix is not None and prefix.recording:
        prefix.layers[module.layer_idx] = (key, value)
    if cpu_attention.usable(query, key):  # grouped-query heads as they are, prefix included
        shared = prefix.layers[module.layer_idx] if prefix is not None and not prefix.recording else None
        return cpu_attention.attention(query, key, value, bounds, scaling, causal=causal, prefix=shared), None
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    if prefix is not None and not prefix.recording:
        shared = tuple(t.repeat_interleave(groups, dim=1) if groups > 1 else t for t in prefix.layers[module.layer_idx])
        return _attend_with_prefix(query, key, value, bounds, shared, scaling), None
    return sdpa_per_sequence(query, key, value, bounds, causal, scaling), None


def sdpa_per_sequence(query: Any, key: Any, value: Any, bounds: list[int], causal: bool, scaling: float | None,
                      query_bounds: list[int] | None = None) -> Any:
    """SDPA with no mask on each packed sequence: (1, heads, T, d) in, (1, T, heads, d) out. Any device.

    bf16 layers on a CPU with AMX run rerankd's kernel instead (:mod:`.cpu_attention`), all sequences
    in one call. ``query_bounds``: where each sequence's queries lie in ``query`` when they are not all of its
    tokens (:class:`FirstRowsOnly`: one row per sequence); keys and values follow ``bounds``.
    """
    if cpu_attention.usable(query, key):
        return cpu_attention.attention(query, key, value, bounds, scaling, query_bounds, causal=causal)
    out = torch.empty_like(query)
    rows = bounds if query_bounds is None else query_bounds
    for (first, last), (start, end) in zip(zip(rows[:-1], rows[1:]), zip(bounds[:-1], bounds[1:])):
        out[:, :, first:last] = nn.functional.scaled_dot_product_attention(
            query[:, :, first:last], key[:, :, start:end], value[:, :, start:end], is_causal=causal, scale=scaling
        )
    return out.transpose(1, 2).contiguous()


# -- CUDA: torch's varlen flash attention, its signature read at run time --------------------------------

#: The positional parameters rerankd passes to ``torch.nn.attention.varlen.varlen_attn``.
VARLEN_POSITIONAL = ("query", "key", "value", "cu_seq_q", "cu_seq_k", "max_q", "max_k")


@functools.lru_cache(maxsize=1)
def varlen_parameters() -> frozenset[str] | None:
    """The parameter names of this torch's ``varlen_attn``, or None when it has none rerankd can call."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return parameters_if_callable(inspect.signature(varlen_attn))


def parameters_if_callable(signature: inspect.Signature) -> frozenset[str] | None:
    """The signature's parameter names when its leading positional ones are :data:`VARLEN_POSITIONAL`."""
    names = list(signature.parameters)
    return frozenset(names) if tuple(names[: len(VARLEN_POSITIONAL)]) == VARLEN_POSITIONAL else None


def attention_kernel(device_type: str, dtype: Any, varlen: frozenset[str] | None) -> str:
    """``varlen`` (one flash call for the batch) on CUDA in fp16/bf16 where torch has it, else ``sdpa``.

    Example:
        >>> attention_kernel("cpu", torch.bfloat16, frozenset(VARLEN_POSITIONAL))
        'sdpa'
    """
    if device_type == "cuda" and dtype in (torch.float16, torch.bfloat16) and varlen is not None:
        return "varlen"
    return "sdpa"


def varlen_options(parameters: frozenset[str], *, causal: bool, scaling: float | None, head_dim: int,
                   groups: int) -> dict[str, Any] | None:
    """Keyword arguments that make ``varlen_attn`` compute this layer's attention; None if it cannot.

    torch 2.10 took ``is_causal``; later versions a ``window_size`` ((-1, 0) is causal), a ``scale``
    and ``enable_gqa`` (grouped-query heads without repeating keys and values).

    Example:
        >>> varlen_options(frozenset({"window_size", "scale"}), causal=True, scaling=None, head_dim=64, groups=1)
        {'window_size': (-1, 0)}
    """
    options: dict[str, Any] = {}
    if causal:
        if "is_causal" in parameters:
            options["is_causal"] = True
        elif "window_size" in parameters:
            options["window_size"] = (-1, 0)
        else:
            return None
    if scaling is not None:
        if "scale" in parameters:
            options["scale"] = scaling
        elif abs(scaling - head_dim ** -0.5) > 1e-9:  # a custom scale this torch cannot take
            return None
    if groups > 1 and "enable_gqa" in parameters:
        options["enable_gqa"] = True
    return options


def _varlen_attention(query: Any, key: Any, value: Any, bounds: list[int], groups: int, options: dict[str, Any]) -> Any:
    from torch.nn.attention.varlen import varlen_attn

    if groups > 1 and not options.get("enable_gqa"):
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    cu = torch.tensor(bounds, dtype=torch.int32, device=query.device)
    longest = max(b - a for a, b in zip(bounds[:-1], bounds[1:]))
    # (1, heads, T, d) → (T, heads, d), the varlen layout.
    q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))
    out = varlen_attn(q, k, v, cu, cu, longest, longest, **options)
    return out.unsqueeze(0)


class SharedPrefix:
    """Keys and values of a prefix every sequence of a batch starts with, per layer."""

    def __init__(self) -> None:
        self.layers: dict[int, tuple[Any, Any]] = {}
        self.recording = True


#: (sequence boundaries, shared prefix, first-rows cut) of the packed call in progress on this thread.
_PACKING: contextvars.ContextVar[tuple[list[int], SharedPrefix | None, FirstRowsOnly | None] | None] = (
    contextvars.ContextVar("rerankd_packing", default=None))


@contextlib.contextmanager
def packing(bounds: list[int], prefix: SharedPrefix | None = None, first_rows: FirstRowsOnly | None = None
            ) -> Iterator[None]:
    """Tell :func:`packed_attention` where the sequences of the next model call start and end."""
    token = _PACKING.set((bounds, prefix, first_rows))
    try:
        yield
    finally:
        _PACKING.reset(token)


class FirstRowsOnly:
    """The last layer of a packed encoder, computed for each sequence's first token only.

    A pair classifier reads one row per sequence, the first, and in a BERT-style layer every step
    but attention works row by row. So the last layer needs its keys and values over all tokens, and
    its queries, attention output, residual, layer norm and feed-forward for the first rows alone:
    about a sixth of its work (MiniLM-L6: a sixth of one of six layers' cost, not one layer's).
    :func:`first_rows_hook` runs before that layer: it computes the keys and values from the full
    hidden states with the layer's own projections and hands the layer the first rows only;
    :func:`packed_attention` then attends each row to its own sequence's keys. Same results up to
    rounding (a matrix product over fewer rows may block its sums differently). Passed to
    :func:`packing` for the model call.
    """

    def __init__(self, attention: Any, first: Any) -> None:
        self.attention = attention
        self.first = first
        self.key: Any = None
        self.value: Any = None


def first_rows_hook(layer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """Forward pre-hook of the last encoder layer: keys and values over all tokens, then the first rows in."""
    context = _PACKING.get()
    state = context[2] if context is not None else None
    if state is None or state.attention is not layer.attention.self or state.key is not None:
        return None  # not this call, or already cut (a model wrapped twice carries the hook twice)
    hidden = args[0] if args else kwargs["hidden_states"]
    attention = state.attention
    shape = (*hidden.shape[:-1], -1, attention.attention_head_size)
    state.key = attention.key(hidden).view(shape).transpose(1, 2)
    state.value = attention.value(hidden).view(shape).transpose(1, 2)
    rows = hidden[:, state.first]
    if args:
        return (rows, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": rows}


def first_rows_layer(model: Any) -> Any:
    """The encoder's last layer when it is BERT-style (``attention.self.key/value``), else None."""
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0 or getattr(model.config, "is_decoder", False):
        return None
    attention = getattr(getattr(layers[-1], "attention", None), "self", None)
    if not all(hasattr(attention, name) for name in ("key", "value", "attention_head_size")):
        return None
    return layers[-1]


def _flash_with_lse(query: Any, key: Any, value: Any, causal: bool, scaling: float | None) -> tuple[Any, Any]:
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, 0.0, causal, scale=scaling)[:2]
    return out, lse


def _varlen_with_lse(query: Any, key: Any, value: Any, bounds_q: list[int], bounds_k: list[int], causal: bool,
                     scaling: float | None) -> tuple[Any, Any]:
    """CUDA: one varlen call over all sequences, in the CPU op's layout: out (1, H, T, d), lse (1, H, T)."""
    from torch.nn.attention.varlen import AuxRequest, varlen_attn

    options = varlen_options(varlen_parameters() or frozenset(), causal=causal, scaling=scaling,
                             head_dim=query.shape[-1], groups=1) or {}
    cu_q = torch.tensor(bounds_q, dtype=torch.int32, device=query.device)
    cu_k = torch.tensor(bounds_k, dtype=torch.int32, device=query.device)
    max_q = max(b - a for a, b in zip(bounds_q[:-1], bounds_q[1:]))
    max_k = max(b - a for a, b in zip(bounds_k[:-1], bounds_k[1:]))
    q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))
    out, lse = varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, return_aux=AuxRequest(lse=True), **options)
    heads, tokens = q.shape[1], q.shape[0]
    if lse.shape == (tokens, heads):  # documented layout (T, H); some versions return (H, T)
        lse = lse.transpose(0, 1)
    return out.transpose(0, 1).unsqueeze(0), lse.unsqueeze(0).float()


def shared_prefix_supported(device: Any) -> bool:
    """Whether the prefix-once path has its log-sum-exp kernels on this device (CPU; CUDA with varlen lse)."""
    kind = torch.device(device).type
    if kind == "cpu":
        return True
    params = varlen_parameters()
    return kind == "cuda" and params is not None and "return_aux" in params


def _attend_with_prefix(query: Any, key: Any, value: Any, bounds: list[int], prefix_kv: tuple[Any, Any], scaling: float | None) -> Any:
    """Causal attention over [shared prefix; own tokens], as two mask-free parts merged by log-sum-exp.

    Every token sees the whole prefix (one call for all sequences) and the causal part of its own
    sequence (one call each on CPU, one varlen call on CUDA). The softmax over the union is the two
    partial results weighted by exp(lse_part − lse_total); for two parts the prefix's weight is
    sigmoid(lse_prefix − lse_own), so the merge is one lerp. Exact up to rounding.
    """
    if query.device.type == "cuda":
        total, width = query.shape[2], prefix_kv[0].shape[2]
        on_prefix, lse_prefix = _varlen_with_lse(query, prefix_kv[0], prefix_kv[1], [0, total], [0, width], False, scaling)
        own, lse_own = _varlen_with_lse(query, key, value, bounds, bounds, True, scaling)
        weight = torch.sigmoid(lse_prefix - lse_own).unsqueeze(-1).to(own.dtype)
        return torch.lerp(own, on_prefix, weight).transpose(1, 2).contiguous()
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


def packs_by_default(device: str, supported: bool) -> bool:
    """Whether a model whose architecture packs (``supported``) runs packed on ``device`` unless told.

    CPU: yes (measured faster). CUDA: not until ``benchmarks/gpu_check.py`` has verified it on a GPU
    (opt in with ``packed=True``). MPS: no (padded SDPA).

    Example:
        >>> packs_by_default("cpu", True), packs_by_default("cuda", True), packs_by_default("cpu", False)
        (True, False, False)
    """
    return supported and device == "cpu"


def supports_packing(family: Family) -> bool:
    from rerankd.compat import packing_supported

    model_type = str(family.config.get("model_type", ""))
    # transformers 4.x encoders never call the registered attention (rerankd.compat): padded there.
    return (model_type in _PACKED_DECODERS and packing_supported()) or (
        model_type in _PACKED_ENCODERS and packing_supported(encoder=True))


def shared_prefix_length(sequences: Sequence[Encoded]) -> int:
    """Tokens that every sequence starts with (leaving each sequence at least one of its own)."""
    shortest = min(len(s) for s in sequences)
    first = sequences[0].input_ids
    common = shortest
    for seq in sequences[1:]:
        ids = seq.input_ids
        common = next((i for i in range(common) if ids[i] != first[i]), common)
    return min(common, shortest - 1)


class PackedInputs:
    """Sequences laid end to end in one row: ids, per-sequence positions, boundaries.

    ``skip`` leading tokens of every sequence are left out (a shared prefix computed once); positions
    still count them.
    """

    def __init__(self, sequences: Sequence[Encoded], position_offset: int, device: Any = "cpu", skip: int = 0) -> None:
        lengths = [len(s) - skip for s in sequences]
        self.bounds = [0]
        for n in lengths:
            self.bounds.append(self.bounds[-1] + n)
        self.lengths = lengths
        self.input_ids = torch.tensor([t for s in sequences for t in s.input_ids[skip:]], device=device).unsqueeze(0)
        with_types = sequences[0].token_type_ids is not None
        self.token_type_ids = (
            torch.tensor([t for s in sequences for t in s.token_type_ids[skip:]], device=device).unsqueeze(0)  # type: ignore[index]
            if with_types else None
        )
        start = position_offset + skip
        self.position_ids = torch.cat([torch.arange(start, start + n) for n in lengths]).unsqueeze(0).to(device)
        self.first = torch.tensor(self.bounds[:-1], device=device)
        self.last = torch.tensor(self.bounds[1:], device=device) - 1

    def model_kwargs(self) -> dict[str, Any]:
        kwargs = {"input_ids": self.input_ids, "position_ids": self.position_ids}
        if self.token_type_ids is not None:
            kwargs["token_type_ids"] = self.token_type_ids
        return kwargs

    def unpacked(self, hidden: Any) -> tuple[Any, Any]:
        """(rows, longest, dim) right-padded hidden states and their mask, from packed (tokens, dim)."""
        rows, width = len(self.lengths), max(self.lengths)
        mask = torch.arange(width, device=hidden.device).unsqueeze(0) < torch.tensor(self.lengths, device=hidden.device).unsqueeze(1)
        padded = hidden.new_zeros(rows, width, hidden.shape[-1])
        padded[mask] = hidden
        return padded, mask.long()


def _position_offset(model: Any) -> int:
    return int(model.config.pad_token_id) + 1 if model.config.model_type in _OFFSET_POSITIONS else 0


class PackedPairClassifierScore(nn.Module):
    """:class:`~rerankd.backends.torch_modules.PairClassifierScore`, computed on packed sequences."""

    def __init__(self, model: Any, num_labels: int) -> None:
        super().__init__()
        self.model = model
        self.num_labels = num_labels
        self.offset = _position_offset(model)
        self.bert_pooler = model.config.model_type in _BERT_POOLER_HEADS
        self.last_layer = first_rows_layer(model)
        if self.last_layer is not None:
            self.last_layer.register_forward_pre_hook(first_rows_hook, with_kwargs=True)

    def forward(self, sequences: Sequence[Encoded]) -> Any:
        packed = PackedInputs(sequences, self.offset, self.model.device)
        state = FirstRowsOnly(self.last_layer.attention.self, packed.first) if self.last_layer is not None else None
        with packing(packed.bounds, first_rows=state):
            hidden = self.model.base_model(**packed.model_kwargs()).last_hidden_state[0]
        # (sequences, 1, hidden): what the heads index [:, 0]
        first = (hidden if state is not None else hidden[packed.first]).unsqueeze(1)
        if self.bert_pooler:
            logits = self.model.classifier(self.model.base_model.pooler(first))
        else:
            logits = self.model.classifier(first)
        return pair_score(logits, self.num_labels)


class PackedLastTokenYesNo(nn.Module):
    """:class:`~rerankd.backends.torch_modules.LastTokenYesNo` on packed sequences (each sequence's own last token)."""

    def __init__(self, base: Any, head_row: Any) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("head_row", head_row.float().reshape(-1), persistent=False)

    def forward(self, sequences: Sequence[Encoded]) -> Any:
        device = self.head_row.device
        shared = shared_prefix_length(sequences) if len(sequences) > 1 and shared_prefix_supported(device) else 0
        if shared < MIN_SHARED_PREFIX:
            packed = PackedInputs(sequences, 0, device)
            with packing(packed.bounds):
                hidden = self.base(**packed.model_kwargs(), use_cache=False).last_hidden_state[0]
            return hidden[packed.last].float() @ self.head_row
        # The prompt, instruction and query are the same for every document of a request: their
        # keys and values are computed once and every document attends to them.
        prefix = SharedPrefix()
        head_ids = torch.tensor(sequences[0].input_ids[:shared], device=device).unsqueeze(0)
        with packing([0, shared], prefix):
            self.base(input_ids=head_ids, position_ids=torch.arange(shared, device=device).unsqueeze(0), use_cache=False)
        prefix.recording = False
        rest = PackedInputs(sequences, 0, device, skip=shared)
        with packing(rest.bounds, prefix):
            hidden = self.base(**rest.model_kwargs(), use_cache=False).last_hidden_state[0]
        return hidden[rest.last].float() @ self.head_row


class PackedPooledEmbedding(nn.Module):
    """:class:`~rerankd.backends.torch_modules.PooledEmbeddingModule` on packed sequences."""

    def __init__(self, model: Any, pooling: str, normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.normalize = normalize
        self.offset = _position_offset(model)

    def forward(self, sequences: Sequence[Encoded]) -> Any:
        packed = PackedInputs(sequences, self.offset, self.model.device)
        with packing(packed.bounds):
            hidden = self.model(**packed.model_kwargs()).last_hidden_state[0]
        padded, mask = packed.unpacked(hidden)
        return pool(padded, mask, self.pooling, self.normalize)


#: head kind → (the transformers model inside the padded module, its packed twin).
PACKED_MODULES: dict[str, Callable[[Any], tuple[Any, nn.Module]]] = {
    "pair-logit": lambda padded: (padded.model, PackedPairClassifierScore(padded.model, padded.num_labels)),
    "yes-no-row": lambda padded: (padded.base, PackedLastTokenYesNo(padded.base, padded.head_row)),
    # The vision tower keeps its own attention; only the text model packs.
    "yes-no-row/vision": lambda padded: (padded.text_model, padded.packed_twin()),
    "pooled-embedding": lambda padded: (padded.model, PackedPooledEmbedding(padded.model, padded.pooling, padded.normalize)),
}


def packed_module(family: Family, padded: Any) -> Any:
    """The packed twin of a padded module built by ``build_module`` (same weights, no copy)."""
    if not supports_packing(family):
        from rerankd.compat import transformers_version
        from rerankd.errors import UnsupportedModelError

        # Its attention would never see the boundaries: every sequence would attend to the others.
        raise UnsupportedModelError(
            f"packed inference is not available for model type {family.config.get('model_type')!r} on transformers "
            f"{'.'.join(map(str, transformers_version()))} (encoders pack from transformers 5.0); use packed=False")
    _register()
    model, module = PACKED_MODULES[head_key(family.head)](padded)
    model.config._attn_implementation = ATTENTION_NAME
    if hasattr(model.base_model, "_update_causal_mask"):
        # transformers < 4.53 decoders build a dense (1, 1, T, T) causal mask for a custom attention
        # name (rerankd.compat); packed_attention never reads it, so build none.
        model.base_model._update_causal_mask = _no_mask
    return module.eval()


def _no_mask(*args: Any, **kwargs: Any) -> None:
    return None
