"""One fingerprint of a loaded model: everything that decides its scores, as flat string fields.

It keys every cache rerankd keeps (eval scores, teacher scores, results), so none can silently mix
scores of two configurations: a cache written under another fingerprint is refused, naming the field.

Fields: ``model`` (the name it was loaded by), ``revision`` (the hub commit, or a content hash of the
local files), ``family``, ``backend``, ``dtype``, ``device_type``, and the family's settings
(``max_length``, the default instruction of an LLM reranker, pooling, labels, activation...);
``quantization`` and ``residual`` (``fp32`` for a bf16 encoder's fp32 residual stream) where they apply.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from rerankd.errors import InputError

#: Files larger than this are hashed by their size and 16 spread 1 MiB blocks rather than whole:
#: a 2 GB checkpoint would cost seconds at every load, and any re-save changes many blocks.
WHOLE_FILE_LIMIT = 256 * 1024 * 1024
_BLOCK = 1024 * 1024
_SAMPLES = 16


def model_fingerprint(family: Any, backend: Any, name: str) -> dict[str, str]:
    """The fingerprint of ``family`` run by ``backend``, loaded as ``name``."""
    described = backend.describe()
    device = str(described.get("device", "cpu"))
    fields: dict[str, Any] = {
        "model": name,
        "revision": revision_of(Path(family.model_dir)),
        "family": family.kind,
        "backend": str(described.get("backend", getattr(backend, "name", ""))),
        "dtype": str(described.get("dtype")),
        "device_type": device.split(":")[0],
        **family.settings(),
    }
    if described.get("quantization"):  # quantized weights score differently; unquantized keeps its old keys
        fields["quantization"] = described["quantization"]
    if described.get("fp32_residual_norms"):  # bf16 with an fp32 residual stream scores apart from plain bf16
        fields["residual"] = "fp32"
    model_file = described.get("model_file")
    if model_file:  # an ONNX graph is its own weights (with its external data file, if any): hash them too
        graph = Path(model_file)
        fields["graph"] = content_hash(graph.parent, only=[p.name for p in (graph, graph.with_name(graph.name + ".data"))
                                                           if p.is_file()])
    return {key: _as_field(value) for key, value in fields.items()}


def revision_of(model_dir: Path) -> str:
    """The hub commit of a snapshot directory, else a content hash of the directory's files."""
    if model_dir.parent.name == "snapshots" and len(model_dir.name) == 40:
        return f"hub:{model_dir.name}"
    return f"sha256:{content_hash(model_dir)}"


def content_hash(directory: Path, only: list[str] | None = None) -> str:
    """A hash over every file's relative path and content (large files sampled, see WHOLE_FILE_LIMIT)."""
    files = [directory / name for name in only] if only else sorted(p for p in directory.rglob("*") if p.is_file())
    return _content_hash(tuple((str(p.relative_to(directory)), p.stat().st_size, p.stat().st_mtime_ns) for p in files),
                         str(directory))[:32]


@functools.lru_cache(maxsize=64)
def _content_hash(entries: tuple[tuple[str, int, int], ...], directory: str) -> str:
    # Cached on (path, size, mtime): a server loading the same files twice hashes them once.
    digest = hashlib.sha256()
    for relative, size, _ in entries:
        if relative.startswith((".", "rerankd/")) or "/." in relative:
            continue  # caches and rerankd's own records beside the weights do not change scores
        _update(digest, relative.encode())
        _update(digest, str(size).encode())
        with open(Path(directory) / relative, "rb") as fh:
            if size <= WHOLE_FILE_LIMIT:
                for block in iter(lambda: fh.read(_BLOCK), b""):
                    digest.update(block)
            else:
                for k in range(_SAMPLES):
                    fh.seek((size - _BLOCK) * k // (_SAMPLES - 1))
                    digest.update(fh.read(_BLOCK))
    return digest.hexdigest()


def check_fingerprint(saved: Mapping[str, Any], current: Mapping[str, Any], where: str) -> None:
    """Refuse ``saved`` (read from ``where``) unless it equals ``current``, naming the first differing field."""
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            raise InputError(
                f"{where} holds scores for {key}={_show(saved.get(key))} but this run has {key}={_show(current.get(key))}; "
                "use another output folder or delete the file to rescore"
            )


def _show(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _update(digest: Any, data: bytes) -> None:
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data)


def _as_field(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
