"""Quantized weights on a GPU, through transformers' own quantization configs.

======================  =================================  ==============================================
``--quantization``      transformers config                needs
======================  =================================  ==============================================
``bnb-4bit``            ``BitsAndBytesConfig`` (NF4)        CUDA, ``pip install bitsandbytes``
``bnb-8bit``            ``BitsAndBytesConfig`` (LLM.int8)   CUDA, ``pip install bitsandbytes``
``int8-weight``         ``TorchAoConfig`` (int8 weights)    CUDA, ``pip install torchao``
``fp8``                 ``FineGrainedFP8Config``            CUDA compute capability 8.9+ (Ada, Hopper),
                                                           ``pip install accelerate``
======================  =================================  ==============================================

The score head is never quantized: its modules are in the config's skip list
(``llm_int8_skip_modules`` / ``modules_to_not_convert``), so a 1-row head is not rounded to zero
and an FP8 head never returns zeros. Checkpoints quantized already (AWQ, GPTQ, ...: a
``quantization_config`` in config.json) load through the same path when their library is there.

Every refusal is one :class:`~rerankd.errors.RerankdError` naming what is missing: the device, or
the pip command of the library.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from rerankd.errors import InputError, MissingDependencyError


@dataclass(frozen=True)
class QuantizationSpec:
    name: str
    #: (import name, pip command) of each library it needs.
    libraries: tuple[tuple[str, str], ...]
    #: Lowest CUDA compute capability (major, minor), or None for any.
    min_capability: tuple[int, int] | None
    #: Bytes per quantized weight, for memory planning.
    bytes_per_weight: float


QUANTIZATIONS: dict[str, QuantizationSpec] = {
    "bnb-4bit": QuantizationSpec("bnb-4bit", (("bitsandbytes", "pip install bitsandbytes"),), None, 0.5),
    "bnb-8bit": QuantizationSpec("bnb-8bit", (("bitsandbytes", "pip install bitsandbytes"),), None, 1.0),
    "int8-weight": QuantizationSpec("int8-weight", (("torchao", "pip install torchao"),), None, 1.0),
    "fp8": QuantizationSpec("fp8", (("accelerate", "pip install accelerate"),), (8, 9), 1.0),
}

#: Libraries of quantized checkpoints: config.json's quant_method → (import name, pip command).
CHECKPOINT_LIBRARIES: dict[str, tuple[str, str]] = {
    "awq": ("awq", "pip install autoawq"),
    "gptq": ("gptqmodel", "pip install gptqmodel  (or: pip install optimum auto-gptq)"),
    "bitsandbytes": ("bitsandbytes", "pip install bitsandbytes"),
    "torchao": ("torchao", "pip install torchao"),
    "fp8": ("accelerate", "pip install accelerate"),
}

#: Modules of each head kind that stay unquantized (matched by name by every transformers quantizer).
HEAD_MODULES: dict[str, tuple[str, ...]] = {
    "pair-logit": ("classifier", "score", "pooler", "head"),
    "yes-no-row": ("lm_head", "score"),
    "pooled-embedding": ("pooler",),
}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_quantization(name: str, device: str, *, capability: tuple[int, int] | None = None,
                       available: Callable[[str], bool] = installed) -> QuantizationSpec:
    """The spec of ``name`` if it can run on ``device`` here; else one clear error.

    ``capability`` is the CUDA device's compute capability (read from the device when ``None``).

    Example:
        >>> check_quantization("bnb-4bit", "cpu")
        Traceback (most recent call last):
        ...
        rerankd.errors.InputError: --quantization bnb-4bit needs a CUDA GPU, and the device is 'cpu'; ...
    """
    spec = QUANTIZATIONS.get(name)
    if spec is None:
        raise InputError(f"unknown quantization {name!r}; use one of {', '.join(QUANTIZATIONS)}")
    if not str(device).startswith("cuda"):
        raise InputError(f"--quantization {name} needs a CUDA GPU, and the device is {device!r}; on a CPU use "
                         "--backend torch-int8, or rerankd quantize --to int8 / int4 (ONNX Runtime)")
    for module, pip in spec.libraries:
        if not available(module):
            raise MissingDependencyError(f"--quantization {name} needs the {module} library, which is not installed: {pip}")
    if spec.min_capability is not None:
        if capability is None:
            import torch

            capability = tuple(torch.cuda.get_device_capability(device))  # type: ignore[assignment]
        if tuple(capability) < spec.min_capability:  # type: ignore[arg-type]
            need = ".".join(map(str, spec.min_capability))
            raise InputError(f"--quantization {name} needs a GPU of compute capability {need} or later (Ada, Hopper); "
                             f"{device} is {'.'.join(map(str, capability))}: use bnb-8bit or int8-weight instead")
    return spec


def check_checkpoint(config: Mapping[str, Any], device: str, available: Callable[[str], bool] = installed) -> str | None:
    """The quant_method of a checkpoint quantized already (``None`` for plain weights), checked loadable here."""
    method = (config.get("quantization_config") or {}).get("quant_method")
    if not method:
        return None
    method = str(method).lower()
    if not str(device).startswith("cuda"):
        raise InputError(f"this checkpoint is quantized ({method}), which needs a CUDA GPU; the device is {device!r}")
    module, pip = CHECKPOINT_LIBRARIES.get(method, (method, f"pip install {method}"))
    if not available(module):
        raise MissingDependencyError(f"this checkpoint is quantized with {method}, which needs {module}: {pip}")
    return method


def skip_modules(head_kind: str) -> list[str]:
    """Module names the quantizer must leave in full precision for a head of this kind."""
    return list(HEAD_MODULES.get(head_kind, ()))


def quantization_config(name: str, head_kind: str, compute_dtype: Any) -> Any:
    """transformers' config object for ``name`` with the head left out (pass as ``quantization_config``)."""
    import transformers

    skip = skip_modules(head_kind)
    if name == "bnb-4bit":
        return transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                               bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_use_double_quant=True,
                                               llm_int8_skip_modules=skip)
    if name == "bnb-8bit":
        return transformers.BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    if name == "int8-weight":
        from torchao.quantization import Int8WeightOnlyConfig

        return transformers.TorchAoConfig(Int8WeightOnlyConfig(), modules_to_not_convert=skip)
    if name == "fp8":
        return transformers.FineGrainedFP8Config(modules_to_not_convert=skip)
    raise InputError(f"unknown quantization {name!r}; use one of {', '.join(QUANTIZATIONS)}")


def available_quantizations(available: Callable[[str], bool] = installed) -> dict[str, str | None]:
    """For memory tiers: which quantization gives 8-bit and 4-bit weights here (``None``: none installed)."""
    eight = "bnb-8bit" if available("bitsandbytes") else "int8-weight" if available("torchao") else None
    four = "bnb-4bit" if available("bitsandbytes") else None
    return {"8bit": eight, "4bit": four}
