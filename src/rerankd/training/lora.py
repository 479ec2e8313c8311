"""LoRA fine-tuning (peft): the spec ``--lora r=16,alpha=32,targets=q_proj,v_proj``, wrapping and saving.

The model saved is either the merged weights (a plain model folder) or the adapter alone, with a
``rerankd_adapter.json`` naming its base and the base's revision; ``Reranker.from_pretrained(base,
adapter=DIR)`` (or ``Reranker.from_pretrained(DIR)``) loads it (see :mod:`rerankd.adapters`). The score
head is untouched: an LLM reranker's yes − no row is read from the (frozen) LM head, so the adapted
model's score is exactly ``l_yes − l_no`` of the adapted network.

Example:
    >>> parse_lora("r=16,alpha=32,targets=q_proj,v_proj")
    LoraSpec(r=16, alpha=32, targets=['q_proj', 'v_proj'], dropout=0.0, merge=False)
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rerankd._optional import require
from rerankd.adapters import ADAPTER_RECORD
from rerankd.errors import InputError

DEFAULT_TARGETS = ["q_proj", "v_proj"]


@dataclass(frozen=True)
class LoraSpec:
    r: int = 16
    alpha: int = 32
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    dropout: float = 0.0
    #: Save the merged weights (a plain model) instead of the adapter.
    merge: bool = False

    def __post_init__(self) -> None:
        if self.r < 1:
            raise InputError(f"LoRA rank r must be at least 1, got {self.r}")
        if self.alpha <= 0:
            raise InputError(f"LoRA alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise InputError("LoRA needs target modules, e.g. targets=q_proj,v_proj")


def parse_lora(text: str, merge: bool = False) -> LoraSpec:
    """``r=16,alpha=32,targets=q_proj,v_proj[,dropout=0.05]``: a bare item extends the previous key's list."""
    values: dict[str, Any] = {}
    key = None
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        if "=" in item:
            key, value = (s.strip() for s in item.split("=", 1))
            values[key] = [value] if key == "targets" else value
        elif key == "targets":
            values["targets"].append(item)
        else:
            raise InputError(f"--lora {text!r}: {item!r} is not KEY=VALUE (keys: r, alpha, targets, dropout)")
    unknown = set(values) - {"r", "alpha", "targets", "dropout"}
    if unknown:
        raise InputError(f"--lora {text!r}: unknown key(s) {sorted(unknown)}; use r, alpha, targets, dropout")
    try:
        spec = LoraSpec(r=int(values.get("r", 16)), alpha=int(values.get("alpha", 32)),
                        targets=list(values.get("targets", DEFAULT_TARGETS)), dropout=float(values.get("dropout", 0.0)))
    except ValueError as exc:
        raise InputError(f"--lora {text!r}: {exc}") from exc
    return replace(spec, merge=merge)


def apply_lora(model: Any, spec: LoraSpec) -> Any:
    """Wrap ``model.net`` with LoRA adapters on ``spec.targets``; only they train."""
    peft = require("peft")
    names = {name.rsplit(".", 1)[-1] for name, _ in model.net.named_modules()}
    absent = [t for t in spec.targets if t not in names]
    if absent:
        raise InputError(f"LoRA targets {absent} are not modules of {model.source}; it has e.g. "
                         f"{sorted(n for n in names if n.endswith('proj') or n in ('query', 'value', 'key', 'dense'))[:8]}")
    config = peft.LoraConfig(r=spec.r, lora_alpha=spec.alpha, target_modules=list(spec.targets), lora_dropout=spec.dropout,
                             bias="none")
    model.net = peft.get_peft_model(model.net, config)
    model.lora = spec
    return model


def save_lora(model: Any, out_dir: Path, max_length: int) -> None:
    """The merged model (``spec.merge``) or the adapter plus its record of the base."""
    from rerankd.fingerprint import revision_of

    out_dir = Path(out_dir)
    if model.lora.merge:
        merged = copy.deepcopy(model.net).merge_and_unload()  # a copy: training may go on after this save
        model.save_weights(merged, out_dir, max_length)
        return
    model.net.save_pretrained(str(out_dir))
    record = {"base": str(model.source), "base_revision": revision_of(model.source), "lora": asdict(model.lora),
              "family": model.family.kind}
    (out_dir / ADAPTER_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
