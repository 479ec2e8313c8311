"""The GPU memory planner's choices for made-up memory and model sizes (pure arithmetic, no device)."""

from __future__ import annotations

import pytest

from rerankd.errors import InputError, ModelError
from rerankd.memory_plan import (
    GRANULARITY,
    MAX_BUDGET_TOKENS,
    OVERHEAD_BYTES,
    TIER_MIN_TOKENS,
    choose_tier,
    estimate_bytes_per_token,
    lowered_budget,
    plan_budget,
)

GiB = 2**30
BOTH = {"8bit": "bnb-8bit", "4bit": "bnb-4bit"}
QWEN3_8B = {"hidden_size": 4096, "intermediate_size": 12288, "model_type": "qwen3"}


def test_budget_is_what_is_left_after_weights_and_overhead_divided_by_the_measured_bytes_per_token() -> None:
    plan = plan_budget(total=24 * GiB, free=24 * GiB, weights=4 * GiB, per_token=1 << 20, fraction=0.5, min_tokens=512)
    expected = (12 * GiB - 4 * GiB - OVERHEAD_BYTES) // (1 << 20)
    assert plan.budget_tokens == expected // GRANULARITY * GRANULARITY == 7680
    assert plan.limit_bytes == 12 * GiB and "7680 tokens" in plan.reason


def test_another_process_on_the_gpu_is_not_counted_as_ours() -> None:
    alone = plan_budget(total=80 * GiB, free=80 * GiB, weights=GiB, per_token=1 << 20, min_tokens=512)
    shared = plan_budget(total=80 * GiB, free=30 * GiB, weights=GiB, per_token=1 << 20, min_tokens=512)
    assert shared.limit_bytes == 30 * GiB < alone.limit_bytes
    assert shared.budget_tokens < alone.budget_tokens


def test_a_large_gpu_is_capped_and_a_full_one_is_refused_naming_the_fix() -> None:
    big = plan_budget(total=141 * GiB, free=140 * GiB, weights=GiB, per_token=8192, min_tokens=512)
    assert big.budget_tokens == MAX_BUDGET_TOKENS and "capped" in big.reason
    with pytest.raises(ModelError, match="--gpu-memory-fraction.*--quantization"):
        plan_budget(total=16 * GiB, free=16 * GiB, weights=14 * GiB, per_token=1 << 20, min_tokens=8192)


def test_fraction_out_of_range_is_an_input_error() -> None:
    with pytest.raises(InputError, match="between 0.05 and 1.0"):
        plan_budget(total=GiB, free=GiB, weights=0, per_token=1, fraction=1.5)


def test_an_oom_halves_the_budget_to_the_failed_batch_and_never_raises_it() -> None:
    assert lowered_budget(32768, 20000) == 10000
    assert lowered_budget(4096, 20000) == 4096
    assert lowered_budget(100, 1) == 1


@pytest.mark.parametrize("tier,params,expected", [
    # The write-ups' tables by hand: an 8B reranker is bf16 at 24 GB, 8-bit at 16 GB and 12 GB...
    ("24gb", 8_200_000_000, None),
    ("16gb", 8_200_000_000, "bnb-8bit"),
    ("12gb", 8_200_000_000, "bnb-8bit"),
    # ...a 4B is bf16 down to 12 GB, 0.6B everywhere.
    ("12gb", 4_000_000_000, None),
    ("12gb", 600_000_000, None),
])
def test_tiers_pick_the_most_precise_weights_that_leave_room_for_batches(tier: str, params: int, expected: str | None) -> None:
    choice = choose_tier(tier, parameters=params, total=80 * GiB, free=80 * GiB,
                         per_token=estimate_bytes_per_token(QWEN3_8B), libraries=BOTH)
    assert choice.quantization == expected
    assert choice.dtype == "bfloat16" and choice.budget_tokens is not None and choice.budget_tokens >= TIER_MIN_TOKENS
    assert tier in choice.reason and f"{params / 1e9:.2f} B parameters" in choice.reason


def test_a_tiny_card_goes_to_4_bit_and_without_libraries_says_what_to_install() -> None:
    per_token = estimate_bytes_per_token(QWEN3_8B)
    small = choose_tier("auto", parameters=8_200_000_000, total=8 * GiB, free=8 * GiB, per_token=per_token, libraries=BOTH)
    assert small.quantization == "bnb-4bit"
    with pytest.raises(ModelError, match="pip install bitsandbytes"):
        choose_tier("auto", parameters=8_200_000_000, total=8 * GiB, free=8 * GiB, per_token=per_token, libraries={})
    torchao_only = choose_tier("16gb", parameters=8_200_000_000, total=80 * GiB, free=80 * GiB, per_token=per_token,
                               libraries={"8bit": "int8-weight", "4bit": None})
    assert torchao_only.quantization == "int8-weight"


def test_auto_reads_free_memory_and_fp16_where_bf16_is_missing() -> None:
    per_token = estimate_bytes_per_token(QWEN3_8B)
    busy = choose_tier("auto", parameters=4_000_000_000, total=24 * GiB, free=10 * GiB, per_token=per_token, libraries=BOTH)
    idle = choose_tier("auto", parameters=4_000_000_000, total=24 * GiB, free=24 * GiB, per_token=per_token, libraries=BOTH)
    assert busy.budget_tokens < idle.budget_tokens  # type: ignore[operator]
    old = choose_tier("auto", parameters=600_000_000, total=16 * GiB, free=16 * GiB, per_token=per_token, bf16=False)
    assert old.dtype == "float16" and old.quantization is None


def test_unknown_tier_is_refused() -> None:
    with pytest.raises(InputError, match="unknown memory tier"):
        choose_tier("8gb", parameters=1, total=GiB, free=GiB, per_token=1)
