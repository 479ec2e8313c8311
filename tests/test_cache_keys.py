"""Cache keys and entries: every field that changes a score changes the key, and no two inputs collide."""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from rerankd.cache.entry import CachedScore
from rerankd.cache.keys import (SCHEMA_VERSION, PairKeys, bytes_digest, canonical_json, combine_digests, encode_fields,
                                pair_key, text_digest)

FINGERPRINT = {"revision": "3f2a9c", "family": "bert", "backend": "torch", "dtype": "float32", "device": "cpu"}
SETTINGS = {"max_length": 512, "document_max_tokens": 256, "truncation": "only_second",
            "chunking": {"mode": "truncate", "max_chunks": 10, "overlap": 32}, "instruction": None}
Q, D = text_digest("what is the capital of france?"), text_digest("Paris is the capital of France.")


def base_key(**changes: object) -> str:
    args: dict[str, object] = {"fingerprint": FINGERPRINT, "settings": SETTINGS, "query_digest": Q,
                               "document_digest": D}
    args.update(changes)
    return pair_key(**args)  # type: ignore[arg-type]


def test_every_fingerprint_field_changes_the_key() -> None:
    keys = {base_key()}
    for name in FINGERPRINT:
        keys.add(base_key(fingerprint={**FINGERPRINT, name: FINGERPRINT[name] + "x"}))
        keys.add(base_key(fingerprint={k: v for k, v in FINGERPRINT.items() if k != name}))
    keys.add(base_key(fingerprint={**FINGERPRINT, "quantization": "int8"}))
    assert len(keys) == 2 * len(FINGERPRINT) + 2


def test_every_setting_changes_the_key() -> None:
    changed = {"max_length": 256, "document_max_tokens": 128, "truncation": "longest_first",
               "chunking": {"mode": "chunk", "max_chunks": 10, "overlap": 32}, "instruction": "Judge relevance"}
    keys = {base_key()}
    for name, value in changed.items():
        keys.add(base_key(settings={**SETTINGS, name: value}))
        keys.add(base_key(settings={k: v for k, v in SETTINGS.items() if k != name}))
    assert len(keys) == 2 * len(changed) + 1
    # Nested settings: each field of the chunking object counts too.
    for field, value in (("max_chunks", 11), ("overlap", 0)):
        assert base_key(settings={**SETTINGS, "chunking": {**SETTINGS["chunking"], field: value}}) != base_key()


def test_schema_query_and_document_change_the_key() -> None:
    keys = {base_key(), base_key(schema=SCHEMA_VERSION + 1), base_key(query_digest=text_digest("other query")),
            base_key(document_digest=text_digest("other document")), base_key(query_digest=D, document_digest=Q)}
    assert len(keys) == 5


def test_split_point_never_collides() -> None:
    # The classic collision of a query + document key.
    ab_c = pair_key({}, {}, text_digest("ab"), text_digest("c"))
    assert ab_c != pair_key({}, {}, text_digest("a"), text_digest("bc"))
    assert encode_fields([b"ab", b"c"]) != encode_fields([b"a", b"bc"])
    assert encode_fields([b"", b"a"]) != encode_fields([b"a", b""]) != encode_fields([b"a"])
    assert combine_digests("doc", [text_digest("ab"), text_digest("c")]) != \
        combine_digests("doc", [text_digest("a"), text_digest("bc")])
    # Raw digests of any length: the frame, not the concatenation, is hashed.
    assert pair_key({}, {}, b"ab", b"c") != pair_key({}, {}, b"a", b"bc")
    # Names and values inside the fingerprint, and a field moving between the fingerprint and the settings.
    assert pair_key({"ab": "c"}, {}, Q, D) != pair_key({"a": "bc"}, {}, Q, D)
    assert pair_key({"a": "1"}, {}, Q, D) != pair_key({}, {"a": "1"}, Q, D) != pair_key({}, {"a": 1}, Q, D)
    assert pair_key({"a": "x", "b": "y"}, {}, Q, D) != pair_key({"a": "x"}, {"b": "y"}, Q, D)


def test_key_ignores_mapping_order_but_not_types() -> None:
    reordered = pair_key(dict(reversed(list(FINGERPRINT.items()))), dict(reversed(list(SETTINGS.items()))), Q, D)
    assert reordered == base_key()
    assert base_key(settings={"c": {"x": 1, "y": 2}}) == base_key(settings={"c": {"y": 2, "x": 1}})
    assert base_key(settings={"flag": True}) != base_key(settings={"flag": 1})
    assert base_key(settings={"n": 1}) != base_key(settings={"n": "1"})
    assert canonical_json({"b": [1, None], "a": "é"}) == '{"a":"é","b":[1,null]}'.encode()
    with pytest.raises(TypeError, match="finite JSON"):
        base_key(settings={"x": math.nan})
    with pytest.raises(TypeError, match="finite JSON"):
        base_key(settings={"x": object()})
    with pytest.raises(TypeError, match="str → str"):
        base_key(fingerprint={"revision": 3})
    with pytest.raises(TypeError, match="bytes"):
        encode_fields(["text"])  # type: ignore[list-item]


def test_pair_keys_equal_pair_key() -> None:
    builder = PairKeys(FINGERPRINT, SETTINGS)
    docs = [text_digest(t) for t in ("", "a", "Paris is the capital of France.")]
    assert builder.keys(Q, docs) == [base_key(document_digest=d) for d in docs]
    assert PairKeys(FINGERPRINT, SETTINGS, schema=SCHEMA_VERSION + 1).key(Q, D) == base_key(schema=SCHEMA_VERSION + 1)
    assert PairKeys(FINGERPRINT, {}).key(Q, D) != builder.key(Q, D)
    with pytest.raises(TypeError, match="str → str"):
        PairKeys({"revision": None}, {})  # type: ignore[dict-item]


def test_digests_are_tagged() -> None:
    assert text_digest("a") != bytes_digest(b"a")
    assert bytes_digest(b"\x89PNG", "image/png") != bytes_digest(b"\x89PNG", "image/jpeg")
    assert combine_digests("doc", [text_digest("a")]) != text_digest("a")
    assert len(text_digest("x")) == len(bytes_digest(b"x")) == 32


def test_key_is_stable_across_processes_and_releases() -> None:
    # A salted hash() would differ between processes; Redis is shared by several, so keys must not.
    code = ("from rerankd.cache.keys import pair_key, text_digest;"
            "print(pair_key({'revision': 'r', 'family': 'bert'}, {'max_length': 512},"
            " text_digest('q'), text_digest('d')))")
    src = str(Path(__file__).resolve().parents[1] / "src")
    out = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": src}).stdout.strip()
           for seed in ("1", "2")}
    # Pinned: a change of the encoding must come with a new SCHEMA_VERSION, which changes every key anyway.
    assert out == {"3d7da9091dcfcabb1a9537ff3c366c35645693372b11de2f6ecc0d8160b450f1"}


@pytest.mark.parametrize("raw", [0.0, -0.0, 1.0 / 3.0, -7.25e-12, 3.4e38, math.inf, -math.inf])
@pytest.mark.parametrize("truncated", [False, True])
def test_entry_round_trips_exactly(raw: float, truncated: bool) -> None:
    entry = CachedScore(raw=raw, truncated=truncated, tokens=511)
    data = entry.to_bytes()
    assert len(data) == 14
    for decoded in (CachedScore.from_bytes(data), CachedScore.from_json(entry.to_json())):
        assert decoded == entry
        assert struct.pack("<d", decoded.raw) == struct.pack("<d", raw)  # bit-exact, sign of zero included


def test_entry_nan_and_corrupt_values() -> None:
    nan = CachedScore(math.nan, False, 3)
    assert math.isnan(CachedScore.from_bytes(nan.to_bytes()).raw)
    assert math.isnan(CachedScore.from_json(nan.to_json()).raw)
    good = CachedScore(1.5, True, 9).to_bytes()
    for bad in (b"", good[:-1], good + b"\0", bytes([2]) + good[1:], good[:9] + bytes([7]) + good[10:]):
        with pytest.raises(ValueError):
            CachedScore.from_bytes(bad)
    for bad in ("{}", "[]", "nope", '{"raw": 1, "truncated": 1, "tokens": 2}', '{"raw": 1, "truncated": true}'):
        with pytest.raises(ValueError):
            CachedScore.from_json(bad)
    with pytest.raises(ValueError, match="tokens"):
        CachedScore(1.0, False, -1)
