"""One cached pair score: the raw score (normalization is applied after lookup), truncation flag, token count."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

# version byte, raw score (float64, exact), truncated flag, token count (uint32): 14 bytes, little-endian.
_FORMAT = struct.Struct("<BdBI")
_VERSION = 1


@dataclass(frozen=True)
class CachedScore:
    """What the cache keeps per pair.

    Attributes:
        raw: the model's raw score (logit or yes−no difference) before any activation.
        truncated: whether the pair was cut to fit the model's length.
        tokens: tokens the pair took after truncation.

    Example:
        >>> s = CachedScore(raw=1.25, truncated=False, tokens=17)
        >>> CachedScore.from_bytes(s.to_bytes()) == s
        True
    """

    raw: float
    truncated: bool
    tokens: int

    def __post_init__(self) -> None:
        if not 0 <= self.tokens <= 0xFFFFFFFF:
            raise ValueError(f"tokens must be within 0..2**32-1, got {self.tokens}")

    def to_bytes(self) -> bytes:
        """14 bytes: a version, the raw score as an exact float64, the flag and the token count."""
        return _FORMAT.pack(_VERSION, float(self.raw), 1 if self.truncated else 0, int(self.tokens))

    @classmethod
    def from_bytes(cls, data: bytes) -> "CachedScore":
        """Decode :meth:`to_bytes`; raises ``ValueError`` on anything else (a foreign or corrupt value)."""
        if len(data) != _FORMAT.size:
            raise ValueError(f"a cached score is {_FORMAT.size} bytes, got {len(data)}")
        version, raw, truncated, tokens = _FORMAT.unpack(data)
        if version != _VERSION or truncated not in (0, 1):
            raise ValueError(f"not a cached score of format {_VERSION}: {data!r}")
        return cls(raw=raw, truncated=bool(truncated), tokens=tokens)

    def to_json(self) -> str:
        """A JSON object; the raw score round-trips exactly (``repr`` of a float is exact)."""
        raw: float | str = self.raw if math.isfinite(self.raw) else repr(self.raw)
        return json.dumps({"raw": raw, "truncated": self.truncated, "tokens": self.tokens}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "CachedScore":
        """Decode :meth:`to_json`; raises ``ValueError`` on a malformed object."""
        try:
            obj = json.loads(text)
            raw, truncated, tokens = obj["raw"], obj["truncated"], obj["tokens"]
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"not a cached score: {text!r}") from exc
        if isinstance(raw, str):
            raw = float(raw)  # "inf", "-inf", "nan", written so by to_json
        if not isinstance(raw, (int, float)) or not isinstance(truncated, bool) or not isinstance(tokens, int):
            raise ValueError(f"not a cached score: {text!r}")
        return cls(raw=float(raw), truncated=truncated, tokens=tokens)
