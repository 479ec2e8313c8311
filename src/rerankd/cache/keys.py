"""Cache keys: SHA-256 over a length-prefixed, canonical encoding of everything that changes a score.

Every part of a key is framed as ``8-byte big-endian length + bytes``, so no two different inputs
encode to the same byte string: the plain ``query + document`` key of some servers maps ("ab", "c") and
("a", "bc") to one entry, while here their frames differ. Python's ``hash()`` is never used: it is salted
per process, so two server processes sharing Redis would never agree on a key.

Example:
    >>> fp = {"family": "bert", "revision": "abc123", "backend": "torch", "dtype": "float32", "device": "cpu"}
    >>> key = pair_key(fp, {"max_length": 512}, text_digest("what is x?"), text_digest("x is y."))
    >>> len(key)
    64
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterable, Mapping

#: Bump when the encoding below or the meaning of a cached value changes: old entries then miss.
SCHEMA_VERSION = 1

_LENGTH_BYTES = 8


def encode_fields(fields: Iterable[bytes]) -> bytes:
    """Frame each field as its length (8 bytes, big-endian) followed by its bytes, and join them.

    The framing is prefix-free, so the encoding of a sequence of fields is injective: use it for any
    digest built from several parts (a multi-part document, a key).

    Example:
        >>> encode_fields([b"ab", b"c"]) != encode_fields([b"a", b"bc"])
        True
    """
    out = bytearray()
    for field in fields:
        if not isinstance(field, (bytes, bytearray, memoryview)):
            raise TypeError(f"encode_fields takes bytes, got {type(field).__name__}")
        out += len(field).to_bytes(_LENGTH_BYTES, "big")
        out += field
    return bytes(out)


def _tagged_digest(tag: str, parts: Iterable[bytes]) -> bytes:
    # The tag keeps a text and a byte string with equal bytes (or a one-part and a many-part document) apart.
    return hashlib.sha256(encode_fields([tag.encode("ascii"), *parts])).digest()


def text_digest(text: str) -> bytes:
    """The 32-byte digest of a text (its UTF-8 bytes, tagged as text).

    Example:
        >>> text_digest("a") != bytes_digest(b"a")
        True
    """
    return _tagged_digest("text", [text.encode("utf-8")])


def bytes_digest(data: bytes, kind: str = "bytes") -> bytes:
    """The 32-byte digest of raw bytes (an image, a video), tagged with ``kind`` (e.g. ``"image/png"``)."""
    return _tagged_digest(f"bytes:{kind}", [bytes(data)])


def combine_digests(kind: str, digests: Iterable[bytes]) -> bytes:
    """One digest for a document made of parts (text, images...), from the parts' digests in order.

    Example:
        >>> combine_digests("doc", [text_digest("ab"), text_digest("c")]) != \\
        ...     combine_digests("doc", [text_digest("a"), text_digest("bc")])
        True
    """
    return _tagged_digest(f"parts:{kind}", list(digests))


def canonical_json(value: object) -> bytes:
    """JSON with sorted keys, no spaces, no NaN: one byte string per value.

    ``True`` and ``1`` encode differently, as do ``1`` and ``1.0``: a key that is too specific costs a
    miss, never a wrong score.
    """
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cache key settings must be finite JSON values, got {value!r}") from exc
    return text.encode("utf-8")


def _head_fields(fingerprint: Mapping[str, str], settings: Mapping[str, object], schema: int) -> list[bytes]:
    for name, value in fingerprint.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"fingerprint fields must be str → str, got {name!r}: {value!r}")
    fields: list[bytes] = [b"rerankd-pair", str(int(schema)).encode("ascii")]
    # Counts before each group keep a fingerprint field from ever reading as a setting.
    fields += [b"fingerprint", str(len(fingerprint)).encode("ascii")]
    for name in sorted(fingerprint):
        fields += [name.encode("utf-8"), fingerprint[name].encode("utf-8")]
    fields += [b"settings", str(len(settings)).encode("ascii")]
    for name in sorted(settings):
        if not isinstance(name, str):
            raise TypeError(f"setting names must be str, got {name!r}")
        fields += [name.encode("utf-8"), canonical_json(settings[name])]
    return fields


class PairKeys:
    """Keys of many pairs under one model and one set of settings: the shared part is encoded and hashed once.

    Gives exactly :func:`pair_key`'s keys (the framing is a concatenation of frames, so hashing can resume
    after the shared head), for about a tenth of the cost per pair.

    Example:
        >>> keys = PairKeys({"revision": "a"}, {"max_length": 512})
        >>> q, d = text_digest("q"), text_digest("d")
        >>> keys.key(q, d) == pair_key({"revision": "a"}, {"max_length": 512}, q, d)
        True
    """

    def __init__(self, fingerprint: Mapping[str, str], settings: Mapping[str, object], *,
                 schema: int = SCHEMA_VERSION) -> None:
        self._head = hashlib.sha256(encode_fields(_head_fields(fingerprint, settings, schema)))

    def key(self, query_digest: bytes, document_digest: bytes) -> str:
        """The key of one pair (64 hex characters)."""
        digest = self._head.copy()
        digest.update(encode_fields([b"query", bytes(query_digest), b"document", bytes(document_digest)]))
        return digest.hexdigest()

    def keys(self, query_digest: bytes, document_digests: Iterable[bytes]) -> list[str]:
        """The keys of one query with each document, in order."""
        return [self.key(query_digest, digest) for digest in document_digests]


def pair_key(
    fingerprint: Mapping[str, str],
    settings: Mapping[str, object],
    query_digest: bytes,
    document_digest: bytes,
    *,
    schema: int = SCHEMA_VERSION,
) -> str:
    """The cache key (64 hex characters) of one (query, document) pair under one model and its settings.

    Args:
        fingerprint: the model's identity: revision or content hash, family, backend, dtype, device type.
        settings: every setting that changes a score (max_length, document token cap, truncation, chunking,
            instruction), values JSON-serialisable.
        query_digest: e.g. :func:`text_digest` of the query.
        document_digest: :func:`text_digest`, :func:`bytes_digest` or :func:`combine_digests` of the document.
        schema: the encoding's version, :data:`SCHEMA_VERSION` unless testing.

    For many pairs under the same fingerprint and settings, :class:`PairKeys` gives the same keys faster.

    Example:
        >>> q, d = text_digest("q"), text_digest("d")
        >>> pair_key({"revision": "a"}, {}, q, d) != pair_key({"revision": "b"}, {}, q, d)
        True
    """
    fields = _head_fields(fingerprint, settings, schema)
    fields += [b"query", bytes(query_digest), b"document", bytes(document_digest)]
    return hashlib.sha256(encode_fields(fields)).hexdigest()
