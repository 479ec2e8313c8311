"""rerankd's C kernels: compiled by the machine's C compiler on first use, cached, loaded with ctypes.

There are no prebuilt binaries: each file of ``backends/kernels`` is compiled (``$CC``, else
``cc``/``gcc``; about a second) into rerankd's cache the first time a process needs it, keyed by the
source, the flags and the compiler's version. The kernels run their loops on torch's own GNU OpenMP
pool, so they are used only where torch loaded libgomp.

Example:
    >>> library = load_kernel("add_layer_norm.c", ("-mavx512f",), "norm kernel", env="RERANKD_CPU_NORM",
    ...                       off="torch", needed=frozenset({"avx512f"}), cpu=cpu_flags())  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import Iterator

from rerankd.hub import cache_root

#: Every kernel: a shared library with OpenMP.
COMMON_FLAGS = ("-O3", "-shared", "-fPIC", "-fopenmp")


class KernelUnavailable(Exception):
    """Why a kernel cannot be loaded here (a sentence for ``rerankd info``)."""


class TorchOnly:
    """A per-context switch that sends a kernel's callers back to torch's ops, for probes and
    benchmarks that compare both. ``with switch.within():`` sets it; ``switch.on()`` reads it."""

    def __init__(self, name: str) -> None:
        self._set: contextvars.ContextVar[bool] = contextvars.ContextVar(name, default=False)

    @contextlib.contextmanager
    def within(self) -> Iterator[None]:
        token = self._set.set(True)
        try:
            yield
        finally:
            self._set.reset(token)

    def on(self) -> bool:
        return self._set.get()


def load_kernel(source: str, flags: tuple[str, ...], what: str, *, env: str, off: str,
                needed: frozenset[str], cpu: frozenset[str]) -> ctypes.CDLL:
    """Build ``backends/kernels/<source>`` with ``flags`` (once per machine) and load it.

    Raises :class:`KernelUnavailable` naming why not: ``env`` set to ``off``; not Linux x86-64; one of
    the ``needed`` CPU flags missing from ``cpu`` (the caller's reading of this CPU's flags); no GNU
    OpenMP in the process; no compiler; or the build of ``what`` (``"attention kernel"``) failing."""
    if os.environ.get(env, "auto").strip().lower() == off:
        raise KernelUnavailable(f"{env}={off}")
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise KernelUnavailable(f"rerankd's {what} is for Linux x86-64")
    missing = needed - cpu
    if missing:
        raise KernelUnavailable(f"this CPU lacks {', '.join(sorted(missing))} for rerankd's {what}")
    if not gnu_openmp_loaded():
        raise KernelUnavailable(f"torch does not run on GNU OpenMP here; the {what} shares torch's threads through it")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise KernelUnavailable(f"no C compiler to build rerankd's {what}: install gcc")
    try:
        return ctypes.CDLL(str(_build(compiler, source, (*COMMON_FLAGS, *flags))))
    except (OSError, subprocess.SubprocessError) as exc:
        raise KernelUnavailable(f"building rerankd's {what} failed: {str(exc).splitlines()[0][:200]}") from exc


def gnu_openmp_loaded() -> bool:
    try:
        return "libgomp" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def _build(compiler: str, source_name: str, flags: tuple[str, ...]) -> Path:
    source = resources.files("rerankd.backends").joinpath("kernels", source_name).read_bytes()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256(source + repr(flags).encode() + version.encode()).hexdigest()[:16]
    target = cache_root() / "kernels" / f"{Path(source_name).stem}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src, built = Path(tmp) / source_name, Path(tmp) / target.name
        src.write_bytes(source)
        done = subprocess.run([compiler, *flags, str(src), "-o", str(built)], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise OSError(done.stderr.strip() or f"{compiler} exited with {done.returncode}")
        os.replace(built, target)  # atomic: a concurrent process sees the old name or the whole file
    return target
