"""How much faster this CPU multiplies matrices in bf16 than in fp32, measured once per process.

Having bf16 instructions does not make bf16 faster. AMX multiplies bf16 tiles at 3.5–7× the fp32
rate (measured on a 2-core Xeon: 1.1–2.1 against 0.3 TFLOP/s). Without AMX, AVX512-BF16's dot
products differ by vendor: AMD Zen 5 runs rerankd's bf16 default 1.6× faster than fp32, while an
Intel core capped below AMX (``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``) multiplies bf16 at 0.65–0.84×
its fp32 rate, so bf16 would be slower *and* less exact there. The flags cannot tell the two apart;
a 1024-wide product in each dtype, through the same oneDNN layers the models run on, can (under 0.1 s).

Example:
    >>> bf16_speedup() > 0  # doctest: +SKIP
    True
"""

from __future__ import annotations

import functools
import statistics
import time
from dataclasses import dataclass

#: The product measured: rows × in → out, one encoder layer's projection on a batch of 256 tokens.
PROBE_SHAPE = (256, 1024, 1024)
REPEATS = 5


@dataclass(frozen=True)
class GemmRates:
    """Measured matrix-product rates, GFLOP/s, on this process's threads."""

    fp32: float
    bf16: float

    @property
    def speedup(self) -> float:
        return self.bf16 / self.fp32


@functools.lru_cache(maxsize=1)
def measured_rates() -> GemmRates:
    """fp32 and bf16 rates of one :data:`PROBE_SHAPE` product on one thread, median of :data:`REPEATS`
    after a warm-up.

    One thread because the ratio is a property of the core, and one thread keeps it when another
    process shares the cores: measured with a competing process on this package's 2-core Xeon (capped
    below AMX), two threads read 67 / 77 GFLOP/s (fp32 / bf16, a barrier waiting on the busy core),
    one thread 175 / 108, as quiet (165 / 108).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return GemmRates(_rate("float32"), _rate("bfloat16"))
    finally:
        torch.set_num_threads(threads)


def bf16_speedup() -> float:
    return measured_rates().speedup


def _rate(dtype_name: str) -> float:
    import torch

    from rerankd.backends.onednn_linear import OneDnnLinear, onednn_linear_supported

    dtype = getattr(torch, dtype_name)
    rows, k, n = PROBE_SHAPE
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        linear = torch.nn.Linear(k, n, dtype=dtype)
        layer = OneDnnLinear(linear) if onednn_linear_supported(dtype) else linear
        x = torch.randn(rows, k, generator=generator).to(dtype)
        layer(x)  # warm-up: oneDNN builds the primitive on first use
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            layer(x)
            times.append(time.perf_counter() - start)
    return 2 * rows * k * n / max(statistics.median(times), 1e-9) / 1e9
