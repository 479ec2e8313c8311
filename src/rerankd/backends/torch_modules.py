"""torch modules that map a padded batch to one output per row, one per family.

They are shared by the torch backend and the ONNX exporter, so both compute the same graph.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rerankd._optional import require
from rerankd.errors import ModelError
from rerankd.families import BiEncoderFamily, CrossEncoderFamily, Family, LlmYesNoFamily

torch = require("torch")
nn = torch.nn


class PairClassifierScore(nn.Module):
    """A sequence classifier's relevance logit (1 label) or positive-vs-negative log-odds (2 labels)."""

    def __init__(self, model: Any, num_labels: int) -> None:
        super().__init__()
        self.model = model
        self.num_labels = num_labels

    def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits.float()
        return logits[:, 0] if self.num_labels == 1 else logits[:, 1] - logits[:, 0]


class LastTokenYesNo(nn.Module):
    """l_yes − l_no at the last position of left-padded rows: one row of the LM head, never the vocabulary."""

    def __init__(self, base: Any, head_row: Any) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("head_row", head_row.float().reshape(-1), persistent=False)

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        hidden = self.base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return hidden[:, -1, :].float() @ self.head_row


class PooledEmbedding(nn.Module):
    """sentence-transformers pooling (cls / mean / max / mean_sqrt_len / lasttoken), optionally normalized."""

    def __init__(self, model: Any, pooling: str, normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.normalize = normalize

    def forward(self, input_ids: Any, attention_mask: Any) -> Any:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
        elif self.pooling == "lasttoken":
            last = attention_mask.sum(dim=1) - 1
            pooled = hidden[torch.arange(hidden.shape[0]), last]
        else:
            summed = (hidden * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            pooled = summed / (counts.sqrt() if self.pooling == "mean_sqrt_len" else counts)
        return nn.functional.normalize(pooled, p=2, dim=1) if self.normalize else pooled


def build_module(family: Family, dtype: Any, device: str) -> nn.Module:
    """Load the weights of ``family.model_dir`` into the module that scores for that family."""
    transformers = require("transformers")
    transformers.utils.logging.disable_progress_bar()  # a server's log is no place for load bars
    # No attn_implementation: transformers picks SDPA where the architecture has it (DeBERTa-v2 does not).
    common = {"dtype": dtype}
    path = str(family.model_dir)
    try:
        if isinstance(family, CrossEncoderFamily):
            model = transformers.AutoModelForSequenceClassification.from_pretrained(path, **common)
            module: nn.Module = PairClassifierScore(model, family.num_labels)
        elif isinstance(family, LlmYesNoFamily):
            base = transformers.AutoModel.from_pretrained(path, **common)
            module = LastTokenYesNo(base, yes_minus_no_row(family, base))
        elif isinstance(family, BiEncoderFamily):
            model = transformers.AutoModel.from_pretrained(path, **common)
            module = PooledEmbedding(model, family.pooling, family.normalize_embeddings)
        else:
            raise ModelError(f"no torch module for family {family.kind}")
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"could not load the weights of {path}: {exc}") from exc
    return module.to(device).eval()


def yes_minus_no_row(family: LlmYesNoFamily, base: Any) -> Any:
    """w_yes − w_no from the LM head (or the converted 1-label classifier's score row)."""
    config = family.config
    archs = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForSequenceClassification") for a in archs):
        score = read_tensor(family.model_dir, "score.weight")
        return score[0] if score.shape[0] == 1 else score[1] - score[0]
    if config.get("tie_word_embeddings", False):
        weight = base.get_input_embeddings().weight
        return (weight[family.yes_id] - weight[family.no_id]).detach().float()
    head = read_tensor(family.model_dir, "lm_head.weight", rows=(family.yes_id, family.no_id))
    return head[0] - head[1]


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
