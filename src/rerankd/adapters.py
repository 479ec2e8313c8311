"""LoRA adapters at load time: a base model plus an adapter folder become one merged model folder.

``Reranker.from_pretrained(base, adapter=DIR)`` merges the adapter (peft) into the base once, in fp32,
into ``$RERANKD_CACHE/adapters/<hash of base revision and adapter files>``, and loads that folder like
any model: every backend, the fingerprint (a content hash of the merged folder), and the family's
head work unchanged. An adapter written by ``rerankd train --lora`` records the revision of the base
it was trained on; another base is refused, naming both.

Example:
    >>> merged_model_dir(Path("Qwen3-Reranker-0.6B"), Path("runs/lora"))   # doctest: +SKIP
    PosixPath('/home/me/.cache/rerankd/adapters/3f2a...')
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from rerankd._optional import require
from rerankd.errors import InputError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_RECORD = "rerankd_adapter.json"
_WEIGHTS = (".safetensors", ".bin", ".index.json")


def is_adapter(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def adapter_base(adapter_dir: Path) -> str:
    """The base an adapter folder names (its rerankd record, else peft's ``base_model_name_or_path``)."""
    record = _read(adapter_dir / ADAPTER_RECORD)
    base = record.get("base") or _read(adapter_dir / ADAPTER_CONFIG).get("base_model_name_or_path")
    if not base:
        raise InputError(f"{adapter_dir} is a LoRA adapter that does not name its base model; pass the base and adapter=")
    return str(base)


def merged_model_dir(base_dir: Path, adapter_dir: Path) -> Path:
    """The folder of ``base_dir`` with ``adapter_dir`` merged in (made once, then reused)."""
    from rerankd.fingerprint import content_hash, revision_of
    from rerankd.hub import cache_root

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / ADAPTER_CONFIG).is_file():
        raise InputError(f"{adapter_dir} is not a LoRA adapter folder: it has no {ADAPTER_CONFIG}")
    base_revision = revision_of(base_dir)
    trained_on = _read(adapter_dir / ADAPTER_RECORD).get("base_revision")
    if trained_on and trained_on != base_revision:
        raise InputError(f"the adapter {adapter_dir} was trained on a base with revision {trained_on}, "
                         f"but {base_dir} has revision {base_revision}; load it with the base it was trained on")
    key = hashlib.sha256(f"{base_revision}\n{content_hash(adapter_dir)}".encode()).hexdigest()[:32]
    out = cache_root() / "adapters" / key
    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".merging-", dir=out.parent))
    try:
        _merge(base_dir, adapter_dir, tmp)
        try:
            os.replace(tmp, out)  # atomic: a concurrent loader sees a whole folder or none
        except OSError:
            if not (out / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _merge(base_dir: Path, adapter_dir: Path, out: Path) -> None:
    torch = require("torch")
    transformers = require("transformers")
    peft = require("peft")
    config = _read(base_dir / "config.json")
    architectures = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForCausalLM") for a in architectures):
        auto = transformers.AutoModelForCausalLM
    elif any(a.endswith("ForConditionalGeneration") for a in architectures):
        auto = transformers.AutoModelForImageTextToText  # a vision-language reranker (Qwen3-VL)
    elif any(a.endswith("ForSequenceClassification") for a in architectures):
        auto = transformers.AutoModelForSequenceClassification
    else:
        auto = transformers.AutoModel
    from rerankd.compat import dtype_kwarg

    # fp32: the merged weights equal base + adapter to float precision whatever the base's dtype.
    model = auto.from_pretrained(str(base_dir), **dtype_kwarg(torch.float32))
    merged = peft.PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    for item in base_dir.iterdir():  # tokenizer, sentence-transformers modules and the like
        if item.name == "config.json" or item.name.startswith(".") or item.name.endswith(_WEIGHTS):
            continue
        target = out / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
    merged.save_pretrained(str(out))


def _read(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
