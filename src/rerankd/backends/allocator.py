"""How the C allocator (glibc) treats the large buffers of CPU inference.

glibc serves a request above its mmap threshold (at most 32 MiB, and always for threads other than
the main one once their 64 MiB heaps are full) with a fresh ``mmap`` and gives it back with
``munmap`` when freed, so the next buffer of that size is new memory that the kernel faults in and
zeroes page by page. One Qwen3-VL-2B scoring of six images allocates such buffers by the hundred
(a vision layer's activations are 5808 × 4096): 555 000 page faults, 2.2 GB zeroed, per call,
~13% of its time on this package's AMX machine. :func:`reuse_large_buffers` raises the mmap and trim
thresholds and keeps every thread on the main arena, so freed buffers are reused; memory the process
no longer needs after loading is still given back explicitly (:func:`return_freed_memory`).
Peak memory is the same either way; the resident size stays near the peak between requests, as with
the allocators (jemalloc, tcmalloc) often preloaded for torch on CPU.

``RERANKD_MALLOC=system`` leaves glibc's settings alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Any

ENV = "RERANKD_MALLOC"
# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
#: Requests below this come from the heap (largest activation buffers of the supported models: ~100 MiB).
MMAP_THRESHOLD = 1 << 30
#: Free memory at the heap's top kept for reuse instead of trimmed.
TRIM_THRESHOLD = 1 << 30


@functools.lru_cache(maxsize=1)
def _glibc() -> Any:
    """glibc's handle when the process runs on glibc (not musl, not macOS), else None."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # only glibc has it
        libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return libc


def return_freed_memory() -> None:
    """Give memory freed while loading back to the operating system (glibc keeps it otherwise).

    Loading converts hundreds of tensors on several threads; glibc keeps the freed buffers in its
    per-thread arenas, which left 0.5 GB more RSS after the XLM-R large load than the model needs.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.lru_cache(maxsize=1)
def reuse_large_buffers() -> str:
    """Set glibc to reuse large freed buffers (once per process); say what was done."""
    if os.environ.get(ENV, "").strip().lower() == "system":
        return f"glibc defaults ({ENV}=system)"
    libc = _glibc()
    if libc is None:
        return "not glibc: allocator left as it is"
    done = [libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD), libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            libc.mallopt(M_ARENA_MAX, 1)]
    if not all(done):
        return "glibc refused the settings: defaults"
    return "glibc: large buffers reused (mmap and trim thresholds 1 GiB, one arena)"
