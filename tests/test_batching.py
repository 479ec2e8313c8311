"""The batch planner and padding, on their own: no model, no tokenizer, no ../shared."""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import pytest

from rerankd.batching import BatchLimits, PaddedBatch, batch_cost, pad_batch, plan_batches
from rerankd.families.base import Encoded, Padding


def plan(lengths: Sequence[int], max_tokens: int, max_rows: int = 128) -> list[list[int]]:
    return plan_batches(list(lengths), BatchLimits(max_tokens=max_tokens, max_rows=max_rows))


def cost(lengths: Sequence[int]) -> int:
    """What a padded batch costs the budget: rows × its longest row."""
    return len(lengths) * max(lengths)


def pad(sequences: Sequence[Encoded], pad_id: int = 0, side: Literal["left", "right"] = "right",
        token_types: bool = False) -> PaddedBatch:
    return pad_batch(sequences, Padding(pad_id, side, token_types))


# -- plan_batches -----------------------------------------------------------------------------------


def test_packed_backends_are_charged_real_tokens_not_padding() -> None:
    lengths = [5, 100, 6, 99]
    assert plan_batches(lengths, BatchLimits(max_tokens=200, max_rows=8), padded=False) == [[0, 2, 3], [1]]
    assert plan_batches(lengths, BatchLimits(max_tokens=200, max_rows=8), padded=True) == [[0, 2], [3, 1]]
    assert batch_cost([3, 5], padded=False) == 8 and batch_cost([3, 5], padded=True) == 10


def test_a_sequence_cost_replaces_its_length() -> None:
    # An image sequence of 10 tokens that costs 300 (its vision tower) is planned by its cost.
    image = Encoded((1,) * 10, cost=300)
    assert image.planned_cost == 300 and Encoded((1, 2)).planned_cost == 2
    costs = [Encoded((1,) * 10).planned_cost, image.planned_cost, Encoded((1,) * 12).planned_cost]
    assert plan_batches(costs, BatchLimits(max_tokens=64, max_rows=8), padded=False) == [[0, 2], [1]]



def test_documented_example() -> None:
    assert plan([5, 100, 6, 99], max_tokens=200, max_rows=8) == [[0, 2], [3, 1]]


def test_no_sequences_no_batches() -> None:
    assert plan([], max_tokens=100) == []


def test_batches_are_length_sorted_and_ties_keep_input_order() -> None:
    assert plan([7, 7, 7, 3, 3], max_tokens=1000) == [[3, 4, 0, 1, 2]]
    assert plan([4, 4, 4, 4], max_tokens=8) == [[0, 1], [2, 3]]


def test_budget_counts_rows_times_the_longest_row() -> None:
    # 3 rows of 10 = 30 fit a 30 budget; a 4th row of 10 (40) does not; one of 11 would make 4 x 11.
    assert plan([10, 10, 10, 10], max_tokens=30) == [[0, 1, 2], [3]]
    # Short rows first: [2, 2, 2] costs 6; adding the 20 would cost 4 x 20 = 80 > 50.
    assert plan([20, 2, 2, 2], max_tokens=50) == [[1, 2, 3], [0]]


def test_a_sequence_over_the_whole_budget_gets_a_batch_of_its_own() -> None:
    assert plan([10, 500, 20], max_tokens=100) == [[0, 2], [1]]
    assert plan([300, 300], max_tokens=100) == [[0], [1]]
    assert plan([1000], max_tokens=1) == [[0]]


def test_max_rows_caps_a_batch_whatever_the_budget() -> None:
    assert plan([5] * 10, max_tokens=10**9, max_rows=3) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert plan([5, 5], max_tokens=10**9, max_rows=1) == [[0], [1]]


@pytest.mark.parametrize("seed", range(20))
def test_random_plans_keep_every_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    lengths = [int(x) for x in rng.integers(1, 600, size=n)]
    max_tokens, max_rows = int(rng.integers(1, 5000)), int(rng.integers(1, 64))
    batches = plan(lengths, max_tokens, max_rows)

    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(n)), "every sequence in exactly one batch"
    assert flat == sorted(range(n), key=lambda i: (lengths[i], i)), "length-sorted, ties in input order"
    for k, batch in enumerate(batches):
        rows = [lengths[i] for i in batch]
        assert len(batch) <= max_rows
        assert cost(rows) <= max_tokens or len(batch) == 1, f"batch {k} is over budget: {rows}"
        if k + 1 < len(batches):  # greedy: a batch is closed only when the next sequence does not fit
            nxt = lengths[batches[k + 1][0]]
            assert len(batch) == max_rows or cost(rows + [nxt]) > max_tokens, f"batch {k} could have taken {nxt}"


@pytest.mark.parametrize("limits", [(0, 8), (8, 0), (-1, -1)])
def test_limits_must_be_positive(limits: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="batch limits"):
        BatchLimits(*limits)


# -- pad_batch --------------------------------------------------------------------------------------


def seq(*ids: int, types: tuple[int, ...] | None = None) -> Encoded:
    return Encoded(tuple(ids), types)


def test_right_padding_for_encoders() -> None:
    batch = pad([seq(1, 2, 3), seq(4, 5)], pad_id=0)
    np.testing.assert_array_equal(batch.input_ids, [[1, 2, 3], [4, 5, 0]])
    np.testing.assert_array_equal(batch.attention_mask, [[1, 1, 1], [1, 1, 0]])
    assert batch.token_type_ids is None
    assert batch.input_ids.dtype == np.int64 and batch.attention_mask.dtype == np.int64


def test_left_padding_for_decoder_llms() -> None:
    batch = pad([seq(1, 2, 3), seq(4, 5)], pad_id=151643, side="left")
    np.testing.assert_array_equal(batch.input_ids, [[1, 2, 3], [151643, 4, 5]])
    np.testing.assert_array_equal(batch.attention_mask, [[1, 1, 1], [0, 1, 1]])


@pytest.mark.parametrize("side,want", [("right", [[0, 0, 1], [0, 1, 0], [0, 0, 0]]), ("left", [[0, 0, 1], [0, 0, 1], [0, 0, 0]])])
def test_token_types_follow_their_tokens(side: Literal["left", "right"], want: list[list[int]]) -> None:
    # The third sequence carries no token types: its row is all segment 0.
    batch = pad([seq(1, 2, 3, types=(0, 0, 1)), seq(4, 5, types=(0, 1)), seq(6)], pad_id=0, side=side, token_types=True)
    assert batch.token_type_ids is not None
    np.testing.assert_array_equal(batch.token_type_ids, want)
    assert batch.token_type_ids.dtype == np.int64


def test_token_types_are_left_out_unless_asked() -> None:
    assert pad([seq(1, 2, types=(0, 1))]).token_type_ids is None


def test_one_sequence_is_not_padded() -> None:
    batch = pad([seq(7, 8, 9)], pad_id=5)
    np.testing.assert_array_equal(batch.input_ids, [[7, 8, 9]])
    assert batch.attention_mask.all()


@pytest.mark.parametrize("side", ["left", "right"])
def test_the_mask_recovers_every_sequence(side: Literal["left", "right"]) -> None:
    rng = np.random.default_rng(3)
    sequences = [seq(*(int(t) for t in rng.integers(1, 1000, size=int(rng.integers(1, 40))))) for _ in range(17)]
    batch = pad(sequences, pad_id=0, side=side)
    assert batch.input_ids.shape == (17, max(len(s) for s in sequences))
    for row, s in enumerate(sequences):
        mask = batch.attention_mask[row] == 1
        assert tuple(batch.input_ids[row][mask].tolist()) == s.input_ids
        assert int(mask.sum()) == len(s)
        assert (batch.input_ids[row][~mask] == 0).all()
        # The real tokens are one contiguous run, at the end (left padding) or the start (right padding).
        where = np.flatnonzero(mask)
        assert where[-1] - where[0] + 1 == len(s)
        assert (where[-1] == batch.input_ids.shape[1] - 1) if side == "left" else (where[0] == 0)
