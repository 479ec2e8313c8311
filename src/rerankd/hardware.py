"""What this machine is: CPU model and flags, the cores this process may use, and a fingerprint of both.

The one reader of ``/proc/cpuinfo`` and of the CPU limits a container sets (affinity mask, cgroup
CPU quota): device choice, ONNX Runtime threads and tuning records all read it from here.

oneDNN's instruction-set cap (``ONEDNN_MAX_CPU_ISA``, e.g. ``AVX2``) is honoured: the flags above the
cap are dropped, since every matrix product rerankd runs through oneDNN then runs without them and
the defaults must follow what will actually execute (the same variable lets a benchmark run this CPU
as an older class; see ``benchmarks/peers.py --cpu-isa``).

Example:
    >>> info = cpu_info()
    >>> info.usable_cores >= 1
    True
"""

from __future__ import annotations

import functools
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

#: The flags that decide which kernels are fast here (and so which default a model gets).
MATRIX_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")

# oneDNN's ISA levels (its ``cpu_isa_t`` names, as ``ONEDNN_MAX_CPU_ISA`` takes them), lowest first,
# each with the flag families it adds; a cap keeps the families of its level and those below.
_ISA_LEVELS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("SSE41", "AVX"), ()),
    (("AVX2",), ("avx2", "fma", "f16c")),
    (("AVX2_VNNI", "AVX2_VNNI_2"), ("avx_vnni",)),
    (("AVX512_CORE",), ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd")),
    (("AVX512_CORE_VNNI",), ("avx512_vnni",)),
    (("AVX512_CORE_BF16",), ("avx512_bf16",)),
    (("AVX10_1_512", "AVX512_CORE_FP16"), ("avx512_fp16",)),
    (("AVX10_1_512_AMX", "AVX512_CORE_AMX"), ("amx_bf16", "amx_int8", "amx_tile")),
    (("AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16", "ALL"), ("amx_fp16", "amx_complex")),
)


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as this process sees it.

    Attributes:
        model: the CPU's model name.
        flags: every feature flag the kernel reports.
        physical_cores: physical cores among the CPUs this process may run on (SMT siblings share
            one core's matrix units, so they add nothing to GEMM throughput).
        usable_cores: what the process may actually use: the affinity mask, capped by a cgroup CPU
            quota (a container given 2 CPUs on a 64-core host), never more than ``physical_cores``.
    """

    model: str
    flags: frozenset[str]
    physical_cores: int
    usable_cores: int



@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    model, flags, cores = _parse_cpuinfo(_read("/proc/cpuinfo"), set(allowed))
    flags = cap_flags(flags, isa_cap())
    physical = max(1, min(len(allowed), len(cores) or len(allowed)))
    quota = cgroup_cpu_limit()
    usable = max(1, min(physical, math.floor(quota) if quota is not None else physical))
    return CpuInfo(model or platform.processor() or platform.machine(), frozenset(flags), physical, usable)


def isa_cap() -> str | None:
    """oneDNN's instruction-set cap from the environment (``ONEDNN_MAX_CPU_ISA`` or its older name
    ``DNNL_MAX_CPU_ISA``), upper-cased, or None when unset."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return value.strip().upper() if value and value.strip() else None


def cap_flags(flags: set[str] | frozenset[str], cap: str | None) -> set[str]:
    """``flags`` without the instruction-set families above oneDNN's ISA level ``cap``.

    Only the families oneDNN's levels name are dropped (the AVX-512 and AMX lines and AVX-VNNI); an
    unknown cap leaves the flags as they are, as oneDNN itself ignores a value it does not know.

    Example:
        >>> sorted(cap_flags({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}, "AVX512_CORE_BF16"))
        ['avx2', 'avx512_bf16', 'avx512f']
    """
    flags = set(flags)
    if cap is None:
        return flags
    names = [level for level, _ in _ISA_LEVELS]
    index = next((i for i, level in enumerate(names) if cap in level), None)
    if index is None:
        return flags
    above = {flag for _, families in _ISA_LEVELS[index + 1:] for flag in families}
    # Flags oneDNN's levels do not list by name (avx512vbmi, avx512ifma, …) belong to the AVX-512
    # line and go with it.
    drop_avx512 = index < next(i for i, (_, families) in enumerate(_ISA_LEVELS) if "avx512f" in families)
    return {f for f in flags if f not in above and not (drop_avx512 and f.startswith("avx512"))}


def cpu_flags() -> frozenset[str]:
    return cpu_info().flags


def physical_cores() -> int:
    """Cores worth one compute thread each: the usable physical cores (see :class:`CpuInfo`)."""
    return cpu_info().usable_cores


def cgroup_cpu_limit() -> float | None:
    """CPUs a cgroup quota allows (v2 ``cpu.max`` or v1 ``cfs_quota/period``), or None when unlimited."""
    v2 = _read("/sys/fs/cgroup/cpu.max").split()
    if len(v2) == 2 and v2[0] != "max":
        return _ratio(v2[0], v2[1])
    quota, period = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").strip(), _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us").strip()
    if quota and period and not quota.startswith("-"):
        return _ratio(quota, period)
    return None


def machine_fingerprint() -> dict[str, object]:
    """What makes timings on one machine differ from another: CPU model, its matrix features, cores, libraries."""
    from importlib.metadata import PackageNotFoundError, version

    info = cpu_info()
    libraries = {}
    for package in ("torch", "onnxruntime"):
        try:
            libraries[package] = version(package)
        except PackageNotFoundError:
            continue
    features = sorted(set(MATRIX_FLAGS) & info.flags)
    return {"cpu": info.model, "features": features, "physical_cores": info.usable_cores, "libraries": libraries}


def _parse_cpuinfo(text: str, allowed: set[int]) -> tuple[str, set[str], set[tuple[str, str]]]:
    """(model name, flags, the (package, core) pairs of the allowed logical CPUs)."""
    model, flags = "", set()
    cores: set[tuple[str, str]] = set()
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if not fields.get("processor", "").isdigit():
            continue
        model = model or fields.get("model name", "")
        flags = flags or set(fields.get("flags", "").split())
        if int(fields["processor"]) in allowed:
            cores.add((fields.get("physical id", "0"), fields.get("core id", fields["processor"])))
    return model, flags, cores


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = float(quota), float(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
