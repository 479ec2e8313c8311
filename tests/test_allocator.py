"""glibc set to reuse large freed buffers (backends/allocator.py): fewer page faults, same results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rerankd.backends import allocator

# In a fresh interpreter: allocate, touch and free a 48 MiB tensor 20 times; count the minor faults.
_FAULTS = """
import json, resource, sys
import torch
from rerankd.backends import allocator
said = allocator.reuse_large_buffers() if sys.argv[1] == "reuse" else "defaults"
torch.empty(12 << 20).fill_(1.0)  # the first one is new memory either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.empty(12 << 20).fill_(1.0)
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, "said": said}))
"""


def _faults(mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    env.pop(allocator.ENV, None)
    done = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_large_buffers_are_reused_instead_of_faulted_in_again() -> None:
    pytest.importorskip("torch")
    if allocator._glibc() is None:
        pytest.skip("not glibc: rerankd leaves this allocator alone")
    fresh, reused = _faults("defaults"), _faults("reuse")
    if fresh["faults"] < 20 * 1000:
        pytest.skip(f"this kernel backs large buffers with few faults already ({fresh['faults']} for 20 × 48 MiB)")
    assert reused["said"].startswith("glibc: large buffers reused")
    assert reused["faults"] < fresh["faults"] / 10


def test_turned_off_by_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(allocator.ENV, "system")
    allocator.reuse_large_buffers.cache_clear()
    try:
        assert allocator.reuse_large_buffers() == f"glibc defaults ({allocator.ENV}=system)"
    finally:
        allocator.reuse_large_buffers.cache_clear()


def test_the_cpu_backend_says_what_it_set(bert_ce: Path) -> None:
    from rerankd.backends.torch_backend import TorchBackend
    from rerankd.families import load_family

    described = TorchBackend(load_family(bert_ce), device="cpu", dtype="fp32").describe()
    assert described["allocator"] == allocator.reuse_large_buffers()
