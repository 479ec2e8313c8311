"""torch modules that map a padded batch to one output per row, built from the head the family declares.

They are shared by the torch backend and the ONNX exporter, so both compute the same graph. The
packed modules (:mod:`rerankd.backends.packed`) reuse the two head pieces defined here —
:func:`pair_score` and :func:`pool` — so each exists once for torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from rerankd._optional import require
from rerankd.errors import ModelError
from rerankd.backends.weights import load_pretrained
from rerankd.families import Family
from rerankd.families.heads import PairLogit, PooledEmbedding, YesNoRow

torch = require("torch")
nn = torch.nn


# -- the head pieces, one implementation each ---------------------------------------------------------


def pair_score(logits: Any, num_labels: int) -> Any:
    """A classifier's relevance: the logit (1 label) or positive-vs-negative log-odds (2 labels), fp32."""
    logits = logits.float()
    return logits[:, 0] if num_labels == 1 or logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]


def pool(hidden: Any, attention_mask: Any, mode: str, normalize: bool) -> Any:
    """sentence-transformers pooling (cls / mean / max / mean_sqrt_len / lasttoken), fp32.

    ``hidden`` is (rows, tokens, dim) with ``attention_mask`` marking real tokens (right padding).
    Written with masked tensor ops only, so the ONNX exporter can trace it.
    """
    hidden = hidden.float()
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        pooled = hidden[:, 0]
    elif mode == "max":
        pooled = hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
    elif mode == "lasttoken":
        last = attention_mask.sum(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0]), last]
    else:
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        pooled = summed / (counts.sqrt() if mode == "mean_sqrt_len" else counts)
    return nn.functional.normalize(pooled, p=2, dim=1) if normalize else pooled


class Fp32Head(nn.Module):
    """A score head kept in fp32 inside a bf16/fp16 model: its input is upcast, its weights are fp32.

    In bf16 a sigmoid (or a 1-row projection) over 8 mantissa bits collapses nearby scores into
    ties and reorders rankings with the batch; the head is a few thousand FLOPs per row, so fp32
    costs nothing measurable.
    """

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner.float()

    def forward(self, hidden: Any, *args: Any, **kwargs: Any) -> Any:
        return self.inner(hidden.float(), *args, **kwargs)


def keep_head_fp32(model: Any) -> list[str]:
    """Wrap every head module of a transformers classifier in :class:`Fp32Head`; the names wrapped.

    The head is whatever sits beside the base model (``classifier``, ``score``, DeBERTa's
    ``pooler``, ModernBERT's ``head``), plus BERT's pooler inside it (dense + tanh, read only by
    the head). Modules without weights (dropout) stay as they are.

    Example:
        >>> keep_head_fp32(bert_for_sequence_classification)     # doctest: +SKIP
        ['classifier', 'bert.pooler']
    """
    wrapped: list[str] = []
    base_name = getattr(model, "base_model_prefix", "")
    for name, child in list(model.named_children()):
        if name != base_name and not isinstance(child, Fp32Head) and any(True for _ in child.parameters()):
            setattr(model, name, Fp32Head(child))
            wrapped.append(name)
    base = getattr(model, base_name, None)
    pooler = getattr(base, "pooler", None) if base is not None else None
    if isinstance(pooler, nn.Module) and not isinstance(pooler, Fp32Head) and any(True for _ in pooler.parameters()):
        base.pooler = Fp32Head(pooler)
        wrapped.append(f"{base_name}.pooler")
    return wrapped


# -- padded modules, one per head kind ----------------------------------------------------------------


class PairClassifierScore(nn.Module):
    """A sequence classifier's :func:`pair_score` over a padded batch."""

    def __init__(self, model: Any, num_labels: int) -> None:
        super().__init__()
        self.model = model
        self.num_labels = num_labels

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        return pair_score(self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits, self.num_labels)


class LastTokenYesNo(nn.Module):
    """l_yes − l_no at the last position of left-padded rows: one row of the LM head, never the vocabulary."""

    def __init__(self, base: Any, head_row: Any) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("head_row", head_row.float().reshape(-1), persistent=False)

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        hidden = self.base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return hidden[:, -1, :].float() @ self.head_row


class PooledEmbeddingModule(nn.Module):
    """:func:`pool` over a padded batch."""

    def __init__(self, model: Any, pooling: str, normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.normalize = normalize

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(hidden, attention_mask, self.pooling, self.normalize)


def _pair_logit(family: Family, head: PairLogit, path: str, common: dict[str, Any]) -> nn.Module:
    model = load_pretrained("sequence-classification", path, **common)
    return pair_logit_module(model, head.num_labels)


def pair_logit_module(model: Any, num_labels: int) -> "PairClassifierScore":
    """A loaded sequence classifier as the padded pair-logit module (its head kept fp32 in bf16/fp16)."""
    if getattr(model, "dtype", None) not in (None, torch.float32):
        keep_head_fp32(model)  # the head reads an upcast hidden state
    return PairClassifierScore(model, num_labels)


def _yes_no_row(family: Family, head: YesNoRow, path: str, common: dict[str, Any]) -> nn.Module:
    base = load_pretrained("base", path, **common)
    return LastTokenYesNo(base, yes_minus_no_row(family, head, base))


def _pooled(family: Family, head: PooledEmbedding, path: str, common: dict[str, Any]) -> nn.Module:
    model = load_pretrained("base", path, **common)
    return PooledEmbeddingModule(model, head.pooling, head.normalize)


def _vision_yes_no_row(family: Family, head: YesNoRow, path: str, common: dict[str, Any]) -> nn.Module:
    from rerankd.backends.vision_language import build_vision_language

    return build_vision_language(family, head, path, common)


#: head kind → how its padded module is loaded.
PADDED_MODULES: dict[str, Callable[..., nn.Module]] = {
    "pair-logit": _pair_logit,
    "yes-no-row": _yes_no_row,
    "yes-no-row/vision": _vision_yes_no_row,
    "pooled-embedding": _pooled,
}


def head_key(head: Any) -> str:
    """The module table key of a head: its kind, with ``/vision`` where the model reads media too."""
    return f"{head.kind}/vision" if getattr(head, "vision", False) else head.kind


def build_module(family: Family, dtype: Any, device: str, quantization: str | None = None) -> nn.Module:
    """Load the weights of ``family.model_dir`` into the padded module for the family's head.

    ``quantization`` (CUDA only, :mod:`rerankd.gpu_quantization`): load the weights through that
    transformers quantization config, the head left unquantized. A checkpoint quantized already
    (AWQ, GPTQ, ...) is loaded as it is, once its library is checked to be there.
    """
    transformers = require("transformers")
    transformers.utils.logging.disable_progress_bar()  # a server's log is no place for load bars
    head = family.head
    builder = PADDED_MODULES.get(head_key(head))
    if builder is None:
        raise ModelError(f"the torch backend has no module for a {head.kind!r} head")
    # No attn_implementation: transformers picks SDPA where the architecture has it (DeBERTa-v2 does not).
    from rerankd.compat import dtype_kwarg

    from rerankd.gpu_quantization import check_checkpoint, quantization_config

    common = dtype_kwarg(dtype)
    quantized = check_checkpoint(family.config, device) is not None
    if quantization is not None:
        common["quantization_config"] = quantization_config(quantization, head.kind, dtype)
        quantized = True
    if quantized:
        # Quantized weights are placed while they load; .to() on them is refused by bitsandbytes.
        common["device_map"] = {"": device}
    try:
        module = builder(family, head, str(family.model_dir), common)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"could not load the weights of {family.model_dir}: {exc}") from exc
    except ImportError as exc:  # a quantization library transformers wanted and did not find
        from rerankd.errors import MissingDependencyError

        raise MissingDependencyError(f"loading {family.model_dir} needs a library that is not installed: {exc}") from exc
    if not quantized:
        return module.to(device).eval()
    for name, buffer in list(module.named_buffers(recurse=False)):  # the yes−no row, read on the CPU
        setattr(module, name, buffer.to(device))
    return module.eval()


def yes_minus_no_row(family: Family, head: YesNoRow, base: Any) -> Any:
    """w_yes − w_no from the LM head (or the converted 1-label classifier's score row)."""
    if head.row_source == "score":
        score = read_tensor(family.model_dir, "score.weight")
        return score[0] if score.shape[0] == 1 else score[1] - score[0]
    if family.config.get("tie_word_embeddings", False):
        weight = base.get_input_embeddings().weight
        return (weight[head.yes_id] - weight[head.no_id]).detach().float()
    rows = read_tensor(family.model_dir, "lm_head.weight", rows=(head.yes_id, head.no_id))
    return rows[0] - rows[1]


def read_tensor(model_dir: Path, name: str, rows: tuple[int, ...] | None = None) -> Any:
    """Read one tensor (or some of its rows) from a checkpoint without loading the rest."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        files = [model_dir / json.loads(index.read_text())["weight_map"].get(name, "model.safetensors")]
    else:
        files = [model_dir / "model.safetensors"]
    if files[0].is_file():
        from safetensors import safe_open

        with safe_open(str(files[0]), framework="pt") as fh:
            for key in (name, f"model.{name}"):
                if key in fh.keys():
                    if rows is None:
                        return fh.get_tensor(key).float()
                    part = fh.get_slice(key)
                    return torch.stack([part[r : r + 1][0] for r in rows]).float()
    binary = model_dir / "pytorch_model.bin"
    if binary.is_file():
        state = torch.load(str(binary), map_location="cpu", weights_only=True)
        tensor = state.get(name, state.get(f"model.{name}"))
        if tensor is not None:
            return (tensor if rows is None else tensor[list(rows)]).float()
    raise ModelError(f"{model_dir} has no tensor {name!r} in its checkpoint files")
