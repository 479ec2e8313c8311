"""Memory: what this process holds, and what a model will need before it is loaded.

``--max-memory`` (``Reranker.from_pretrained(max_memory=...)``) makes the default choice of precision
and backend respect a budget: the estimate of each candidate's peak is compared with the budget and
the fastest candidate that fits is taken; when none fits, the error names the budget and the smallest
estimate.

Example:
    >>> parse_size("2.5GB")
    2500000000
    >>> parse_size("512MiB")
    536870912
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from rerankd.errors import InputError
from rerankd.measure import peak_rss_bytes

__all__ = ["ModelWeights", "parse_size", "peak_rss_bytes", "resident_bytes", "read_weights", "estimate_peak_bytes"]

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "kib": 2**10, "mib": 2**20, "gib": 2**30}
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}
BYTES_PER_ELEMENT = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}

#: What the process holds before the weights: the interpreter with torch, transformers and the
#: tokenizer imported (measured: 275 MiB on torch 2.13 / transformers 5.24), plus activations of one
#: CPU batch of 4096 tokens.
RUNTIME_BYTES = 400 * 2**20


def parse_size(text: str | int) -> int:
    """Bytes from ``"2.5GB"``, ``"1800MiB"``, ``"3g"`` or a plain number of bytes."""
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).lower() if match else ""
        if not match or unit not in _UNITS:
            raise InputError(f"memory size {text!r} is not a size; write it like 2.5GB, 1800MiB or 3000000000")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise InputError(f"memory size must be positive, got {text!r}")
    return value


def resident_bytes() -> int:
    """This process's resident memory now (Linux VmRSS; elsewhere the peak, the best figure at hand)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_rss_bytes()


@dataclass(frozen=True)
class ModelWeights:
    """What a checkpoint holds, read from its safetensors headers (no tensor is loaded)."""

    parameters: int
    #: Elements of the largest tensor: the loader converts tensors one at a time (a few in
    #: parallel), so the largest, in the file's precision, is what loading adds beyond the model.
    largest_tensor: int
    file_bytes_per_element: int

    #: Elements of the input embedding tables that stay memory-mapped from the file when the model is
    #: loaded in the keyed dtype (``backends/weights.py``): only the rows a workload uses become resident.
    mapped_elements: dict[str, int] = field(default_factory=dict)

    def loaded_bytes(self, dtype: str) -> int:
        resident = self.parameters - self.mapped_elements.get(dtype, 0)
        return resident * BYTES_PER_ELEMENT[dtype]


def safetensors_header(file: Path) -> tuple[dict, int]:
    """A safetensors file's JSON header and where its data starts: the format is an 8-byte header
    length, the header (``dtype``, ``shape``, ``data_offsets`` per tensor), then the data."""
    with open(file, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(length)), 8 + length


def read_weights(model_dir: Path) -> ModelWeights | None:
    """The parameter count of a safetensors checkpoint, or None for other formats."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    from rerankd.backends.weights import stays_mapped

    parameters = largest = 0
    file_bytes = 4
    mapped: dict[str, int] = {}
    for file in files:
        header, start = safetensors_header(file)
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in entry["shape"]:
                count *= int(dim)
            parameters += count
            if count > largest:
                largest, file_bytes = count, _DTYPE_BYTES.get(entry["dtype"], 4)
            for dtype in BYTES_PER_ELEMENT:
                if stays_mapped(name, entry["dtype"], entry["shape"], start + int(entry["data_offsets"][0]), dtype):
                    mapped[dtype] = mapped.get(dtype, 0) + count
    return ModelWeights(parameters, largest, file_bytes, mapped)


def estimate_peak_bytes(weights: ModelWeights, dtype: str, *, int8_linear: bool = False) -> int:
    """The peak resident memory of loading ``weights`` in ``dtype`` and scoring one CPU batch.

    ``int8_linear``: the torch-int8 backend loads fp32, then quantizes the linear layers; its peak is
    the fp32 model (the int8 copy is made layer by layer).
    """
    model = weights.loaded_bytes("float32" if int8_linear else dtype)
    converting = weights.largest_tensor * weights.file_bytes_per_element if dtype != "float32" else 0
    return RUNTIME_BYTES + model + converting


@dataclass(frozen=True)
class Candidate:
    """One way to run a model: a backend and a dtype (None: the backend's own default)."""

    backend: str
    dtype: str

    def peak_bytes(self, weights: ModelWeights) -> int:
        return estimate_peak_bytes(weights, "float32" if self.dtype == "int8" else self.dtype,
                                   int8_linear=self.dtype == "int8")

    def label(self) -> str:
        return f"{self.backend} {self.dtype}"


def fit_to_budget(weights: ModelWeights, candidates: list[Candidate], budget: int) -> tuple[Candidate, str]:
    """The first candidate (they come fastest first) whose estimated peak fits ``budget``, and why."""
    estimates = [(candidate, candidate.peak_bytes(weights)) for candidate in candidates]
    for i, (candidate, peak) in enumerate(estimates):
        if peak <= budget:
            skipped = "; ".join(f"{c.label()} needs about {_gib(p)}" for c, p in estimates[:i])
            why = f"{candidate.label()}: estimated peak {_gib(peak)} within --max-memory {_gib(budget)}"
            return candidate, why + (f" ({skipped})" if skipped else "")
    smallest, peak = min(estimates, key=lambda e: e[1])
    raise InputError(
        f"the model ({weights.parameters / 1e6:.0f}M parameters) does not fit --max-memory {_gib(budget)}: "
        f"the smallest way to run it here, {smallest.label()}, needs about {_gib(peak)}; "
        "raise the budget or serve a smaller model"
    )


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def candidates(backend: str, dtype: str | None, device: str, default_dtype: str) -> list[Candidate]:
    """The ways to run a model that ``--max-memory`` may choose between, fastest first.

    An explicit dtype, or a backend other than ``torch``, is the user's choice: it is only checked.
    On a CPU without native bf16 (``default_dtype`` fp32) int8 linear layers come before bf16, which
    such CPUs emulate at under 1 GFLOP/s.
    """
    if backend != "torch" or dtype is not None:
        return [Candidate(backend, "int8" if backend == "torch-int8" else (dtype or default_dtype))]
    options = [Candidate("torch", default_dtype)]
    if device == "cpu" and default_dtype == "float32":
        options += [Candidate("torch-int8", "int8"), Candidate("torch", "bfloat16")]
    elif default_dtype == "float32":
        options.append(Candidate("torch", "bfloat16"))
    return options
