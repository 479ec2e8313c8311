"""The parts of rerankd on Ray that need no Ray: option parsing, cluster addresses, candidate files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rerankd.errors import InputError
from rerankd.evaluation.datasets import read_candidates
from rerankd.evaluation.metrics import ranking
from rerankd.ray.cluster import _host_port, check_reachable
from rerankd.ray.serving import parse_autoscale


def test_autoscale_bounds() -> None:
    assert parse_autoscale("1,4") == (1, 4) and parse_autoscale("0, 2") == (0, 2)
    for bad in ("4", "a,b", "3,1", "0,0"):
        with pytest.raises(InputError, match="--autoscale"):
            parse_autoscale(bad)


def test_ray_addresses() -> None:
    assert _host_port("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert _host_port("ray://head.local:10001") == ("head.local", 10001)
    assert _host_port("ray://head.local") == ("head.local", 10001)
    with pytest.raises(InputError, match="not host:port"):
        _host_port("head:port")


def test_an_unanswered_address_is_named() -> None:
    import socket

    with socket.socket() as s:  # bound, not listening: a connection is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(InputError, match=f"the Ray cluster at '127.0.0.1:{port}' is unreachable"):
            check_reachable(f"127.0.0.1:{port}")


def test_candidate_files(tmp_path: Path) -> None:
    rows = tmp_path / "c.jsonl"
    rows.write_text("\n".join(json.dumps(r) for r in [
        {"qid": "1", "docid": "b", "score": 2.0}, {"qid": "1", "docid": "a", "score": 3.0},
        {"qid": 2, "docids": ["z", "y", "x"]},  # no scores: the order given is the ranking
    ]) + "\n")
    run = read_candidates(rows)
    assert ranking(run["1"]) == ["a", "b"] and ranking(run["2"]) == ["z", "y", "x"]
    trec = tmp_path / "r.trec"
    trec.write_text("1 Q0 a 1 3.0 t\n1 Q0 b 2 2.0 t\n")
    assert read_candidates(trec) == {"1": {"a": 3.0, "b": 2.0}}
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed: pip install 'rerankd[ray]'")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist([{"qid": "1", "docid": "a", "score": 1.0}]), tmp_path / "c.parquet")
    assert read_candidates(tmp_path / "c.parquet") == {"1": {"a": 1.0}}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"docid": "a"}) + "\n")
    with pytest.raises(InputError, match="missing field 'qid'"):
        read_candidates(bad)
