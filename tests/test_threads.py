"""The CPU thread governor (backends/threads.py): the fastest thread count, found by measuring."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerankd.backends.threads import FIRST_PROBE, LONGEST_PROBE, ThreadGovernor, governed


def run(governor: ThreadGovernor, seconds_per_token: dict[int, float], batches: int) -> list[int]:
    used = []
    for _ in range(batches):
        threads = governor.next_threads()
        used.append(threads)
        governor.record(threads, 4096, 4096 * seconds_per_token[threads])
    return used


def test_quiet_machine_keeps_all_cores_and_probes_ever_less() -> None:
    governor = ThreadGovernor(max_threads=2)
    used = run(governor, {2: 1.0, 1: 1.8}, 1200)
    assert governor.best == 2
    probes = [i for i, t in enumerate(used) if t == 1]
    assert 3 <= len(probes) <= 12  # 1200 batches: the waits double up to LONGEST_PROBE
    assert probes[-1] - probes[-2] == LONGEST_PROBE


def test_contention_moves_to_fewer_threads_at_the_first_probe() -> None:
    governor = ThreadGovernor(max_threads=2)
    used = run(governor, {2: 3.0, 1: 1.5}, 40)
    first_one = used.index(1)
    assert first_one < FIRST_PROBE and all(t == 1 for t in used[first_one:] if t != 2)
    assert governor.best == 1 and used[-10:].count(1) >= 9


def test_returns_to_all_cores_when_contention_ends() -> None:
    governor = ThreadGovernor(max_threads=2)
    run(governor, {2: 3.0, 1: 1.5}, 300)  # long contention: probes of 2 threads are now rare
    assert governor.best == 1
    used = run(governor, {2: 0.5, 1: 0.9}, LONGEST_PROBE + 2)
    assert governor.best == 2 and used[-1] == 2


def test_more_cores_try_powers_of_two() -> None:
    governor = ThreadGovernor(max_threads=8)
    assert governor.counts == [8, 4, 2, 1]
    run(governor, {8: 2.0, 4: 1.0, 2: 1.4, 1: 2.5}, 100)
    assert governor.best == 4
    assert ThreadGovernor(max_threads=1).counts == [1]


def _probing_governor() -> ThreadGovernor:
    governor = ThreadGovernor(max_threads=2)
    governor._until_probe = 1  # the next batch is a probe of 1 thread
    return governor


def test_governed_sets_torch_threads_and_records(torch_threads) -> None:  # type: ignore[no-untyped-def]
    governor = _probing_governor()
    with governed(torch_threads, governor, 1000):
        assert torch_threads.get_num_threads() == 1
    assert 1 in governor.cost
    with governed(torch_threads, None, 1000):  # no governor: nothing changes
        pass


def test_governed_gives_the_callers_thread_count_back(torch_threads) -> None:  # type: ignore[no-untyped-def]
    torch_threads.set_num_threads(2)
    governor = _probing_governor()
    with governed(torch_threads, governor, 1000):
        assert torch_threads.get_num_threads() == 1
    assert torch_threads.get_num_threads() == 2
    governor._until_probe = 1
    with pytest.raises(ValueError), governed(torch_threads, governor, 1000):
        raise ValueError("a failing batch")
    assert torch_threads.get_num_threads() == 2


def test_scoring_leaves_the_process_thread_count_alone(bert_ce: Path, sentences: list[str]) -> None:
    torch = pytest.importorskip("torch")
    from rerankd import Reranker

    reranker = Reranker.from_pretrained(bert_ce)
    governor = reranker.backend.governor
    if governor is None:
        pytest.skip("one usable core here: there is no thread count to choose")
    before = torch.get_num_threads()
    probed = next(c for c in governor.counts if c != governor.best)
    governor._until_probe = 1  # the next batch probes another count
    reranker.score("capital of France?", sentences)
    assert probed in governor.cost  # the batch did run on the probed count
    assert torch.get_num_threads() == before


def test_scores_do_not_depend_on_the_thread_count(bert_ce: Path, sentences: list[str]) -> None:
    from rerankd import Reranker

    reranker = Reranker.from_pretrained(bert_ce)
    governor = reranker.backend.governor
    if governor is None:
        pytest.skip("one usable core here: there is no thread count to choose")
    scores = {}
    for threads in governor.counts:
        governor.best, governor._until_probe = threads, 10**9  # pin the choice
        scores[threads] = reranker.score("capital of France", sentences * 20, raw=True)
    first = scores[governor.counts[0]]
    assert all(s == first for s in scores.values())
    assert reranker.describe()["adaptive_threads"] is True


def test_pin_threads_stops_choosing(bert_ce: Path) -> None:
    from rerankd import Reranker

    reranker = Reranker.from_pretrained(bert_ce)
    if reranker.backend.governor is None:
        pytest.skip("one usable core here: there is no thread count to choose")
    assert reranker.pin_threads() is reranker
    assert reranker.backend.governor is None and reranker.describe()["adaptive_threads"] is False
    reranker.pin_threads()  # twice is fine
