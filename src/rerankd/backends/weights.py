"""Load a transformers model's weights without the checkpoint file's pages staying in memory.

``from_pretrained`` memory-maps ``*.safetensors`` files. Every page it reads stays mapped, and so
counted in the process's RSS, until loading ends: a model stored in fp32 and loaded in bf16 peaks at
the whole fp32 file *plus* the bf16 copy (3.6 GB for bge-reranker-v2-m3's shape, whose weights take
1.1 GB in bf16). safetensors' ``pread`` backend reads each tensor into memory of its own instead, so
the peak is the loaded model plus the few tensors being converted. transformers accepts such lazy
slices as its ``state_dict`` (it materializes each one with ``slice[...]``, as it does the mmap'd
ones), so every rename, tie and dtype rule of its loader still applies.

An input embedding table stored in the dtype it is loaded in (XLM-R's 250k × 1024 fp32 table in an
fp32 model: 1 GB of bge-reranker-v2-m3's 2.2) is not read at all: it stays memory-mapped from the
file, privately (copy-on-write: nothing can write to the checkpoint), and only the pages of the
tokens a workload uses become resident. Scoring only gathers rows of it, so nothing else changes.

Where that cannot be used (transformers before 5, a safetensors without ``pread``, ``.bin``
checkpoints) the model loads with plain ``from_pretrained``.

Example:
    >>> model = load_pretrained("sequence-classification", "/models/bge-reranker-v2-m3", dtype=torch.bfloat16)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

from rerankd._optional import require

ModelKind = Literal["sequence-classification", "base"]


#: Tensors above this many elements are converted in row blocks (an fp32 copy of XLM-R's 250k-row
#: embedding table alone is 1 GB), or, for input embedding tables already in the target dtype, mapped.
_BLOCKWISE_ABOVE = 1 << 24
_ROWS_PER_BLOCK = 8192
#: Names of the input embedding tables that may stay mapped: lookups read only the rows in use.
_EMBEDDING_TABLES = ("word_embeddings.weight", "embed_tokens.weight")
_FILE_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


class _ConvertingSlice:
    """An fp32 safetensors tensor that yields itself already in the target dtype, read and converted
    block by block, so the whole fp32 tensor is never held beside its converted copy.

    The blocks are read with ``os.pread`` at the offsets the file's header gives: indexing a
    safetensors slice by rows reads the whole tensor each time (measured: 29 s and no memory saved
    for XLM-R's embedding table), which defeats the purpose.
    """

    def __init__(self, inner: Any, path: Path, offset: int, dtype: Any) -> None:
        self._inner, self._path, self._offset, self._dtype = inner, path, offset, dtype

    def __getitem__(self, key: Any) -> Any:
        if key is not Ellipsis:
            return self._inner[key]
        import os

        import torch

        shape = list(self._inner.get_shape())
        row_bytes = 4 * _numel(shape[1:])
        out = torch.empty(shape, dtype=self._dtype)
        flat = out.view(shape[0], -1)
        fd = os.open(self._path, os.O_RDONLY)
        try:
            for start in range(0, shape[0], _ROWS_PER_BLOCK):
                rows = min(_ROWS_PER_BLOCK, shape[0] - start)
                data = os.pread(fd, rows * row_bytes, self._offset + start * row_bytes)
                if len(data) != rows * row_bytes:
                    raise OSError(f"{self._path} ends inside a tensor")
                block = torch.frombuffer(bytearray(data), dtype=torch.float32).view(rows, -1)
                flat[start : start + rows] = block.to(self._dtype)
        finally:
            os.close(fd)
        return out

    def __getattr__(self, name: str) -> Any:  # get_shape, get_dtype, ...
        return getattr(self._inner, name)


class _LazyStateDict(dict):
    """A state dict of unread safetensors slices. ``from_pretrained`` deep-copies its keyword
    arguments; the slices are handles on open files and are shared, not copied."""

    def __deepcopy__(self, memo: dict[int, Any]) -> "_LazyStateDict":
        return self


def load_pretrained(kind: ModelKind, path: str | Path, **kwargs: Any) -> Any:
    """``AutoModelForSequenceClassification`` / ``AutoModel`` ``.from_pretrained(path, **kwargs)``,
    reading safetensors checkpoints tensor by tensor (see the module docstring)."""
    transformers = require("transformers")
    auto = transformers.AutoModelForSequenceClassification if kind == "sequence-classification" else transformers.AutoModel
    files = _safetensors_files(Path(path))
    # Quantized loads (rerankd.gpu_quantization) place and convert weights through their quantizer.
    if not files or not _pread_supported() or "quantization_config" in kwargs or "device_map" in kwargs:
        return auto.from_pretrained(str(path), **kwargs)
    from rerankd.compat import transformers_version

    if transformers_version() < (5, 0):
        return auto.from_pretrained(str(path), **kwargs)
    config = transformers.AutoConfig.from_pretrained(str(path))
    mapping = (transformers.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING if kind == "sequence-classification"
               else transformers.MODEL_MAPPING)
    model_class = mapping[type(config)]
    from safetensors import safe_open

    target = kwargs.get("dtype")
    keep_fp32 = _kept_in_fp32(model_class, target)
    with ExitStack() as stack:
        state = _LazyStateDict()
        for file in files:
            handle = stack.enter_context(safe_open(str(file), framework="pt", device="cpu", backend="pread"))
            offsets = _data_offsets(file)
            for key in handle.keys():
                part = handle.get_slice(key)
                shape, file_dtype = part.get_shape(), part.get_dtype()
                blockwise = (target is not None and target.is_floating_point and file_dtype == "F32"
                             and _numel(shape) > _BLOCKWISE_ABOVE and not any(k in key for k in keep_fp32))
                if target is not None and stays_mapped(key, file_dtype, shape, offsets[key], str(target).removeprefix("torch.")):
                    state[key] = mapped_tensor(file, offsets[key], shape, target)
                elif blockwise:
                    state[key] = _ConvertingSlice(part, file, offsets[key], target)
                else:
                    state[key] = part
        # The path is not passed: transformers refuses a state dict beside a checkpoint name.
        return model_class.from_pretrained(None, config=config, state_dict=state, **kwargs)


def stays_mapped(name: str, file_dtype: str, shape: Any, offset: int, target: str) -> bool:
    """Whether tensor ``name`` (safetensors dtype ``file_dtype``, first byte at ``offset`` of its file)
    stays mapped when loaded in ``target`` (``"float32"``, ``"bfloat16"``, ...): a large input embedding
    table already in that dtype, aligned to its elements (torch reads a mapped tensor in place)."""
    from rerankd.memory import BYTES_PER_ELEMENT

    return (name.endswith(_EMBEDDING_TABLES) and _numel(shape) > _BLOCKWISE_ABOVE
            and target in _FILE_DTYPES.values() and _FILE_DTYPES.get(file_dtype) == target
            and offset % BYTES_PER_ELEMENT[target] == 0)


def mapped_tensor(file: Path, offset: int, shape: Any, dtype: Any) -> Any:
    """The tensor at byte ``offset`` of ``file``, memory-mapped copy-on-write rather than read.

    Pages are read from the file when first touched, and writes (none are made) would go to private
    copies. The tensor holds the mapping open; a checkpoint replaced on disk (a new hub revision is a
    new file) leaves the mapped one intact.
    """
    import mmap

    import torch

    with open(file, "rb") as fh:
        mapping = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
    return torch.frombuffer(mapping, dtype=dtype, count=_numel(shape), offset=offset).view(*[int(d) for d in shape])


def _kept_in_fp32(model_class: Any, dtype: Any) -> list[str]:
    """The module names transformers keeps in fp32 at ``dtype``: never hand it those pre-converted."""
    import torch

    names = list(getattr(model_class, "_keep_in_fp32_modules_strict", None) or [])
    if dtype == torch.float16:
        names += list(getattr(model_class, "_keep_in_fp32_modules", None) or [])
    return names


def _data_offsets(file: Path) -> dict[str, int]:
    """Each tensor's first byte in ``file``."""
    from rerankd.memory import safetensors_header

    header, start = safetensors_header(file)
    return {name: start + int(entry["data_offsets"][0]) for name, entry in header.items() if name != "__metadata__"}


def _numel(shape: Any) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def _safetensors_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [model_dir / shard for shard in shards]
    single = model_dir / "model.safetensors"
    return [single] if single.is_file() else []


@functools.lru_cache(maxsize=1)
def _pread_supported() -> bool:
    """safetensors reads with ``backend="pread"`` from 0.8 on."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(x) for x in version("safetensors").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (0, 8)
