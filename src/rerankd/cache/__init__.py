"""rerankd's pair-level result cache: keys, entries, the memory and Redis tiers, in-flight de-duplication.

A pipeline uses it in four steps (``cache = build_cache(settings)``, ``inflight = InFlight()`` made once)::

    policy = CachePolicy.from_cache_control(request_headers.get("cache-control"))
    keys = PairKeys(fingerprint, settings).keys(text_digest(query), [doc.digest for doc in documents])
    found = cache.lookup(keys, policy=policy)                # memory, then one MGET for the rest
    with inflight.claim([k for k, hit in zip(keys, found) if hit is None]) as claim:
        scores = score_pairs(claim.owned)                    # tokenize + score only these: {key: CachedScore}
        cache.store(scores, policy=policy)                   # store first, then settle (no gap for others)
        claim.settle(scores)
        theirs, yourself = claim.wait(timeout)               # pairs other requests were scoring
    # score `yourself` too (their owner failed or was slow); normalize raw scores after all this.

Importing this package is light: redis and prometheus-client load only when a Redis tier or the metrics
collector is made.
"""

from __future__ import annotations

from rerankd.cache.breaker import CircuitBreaker, CircuitState
from rerankd.cache.config import CacheMode, CacheSettings, build_cache
from rerankd.cache.entry import CachedScore
from rerankd.cache.inflight import Claim, InFlight, InFlightAbandoned
from rerankd.cache.keys import (SCHEMA_VERSION, PairKeys, bytes_digest, combine_digests, encode_fields, pair_key,
                                text_digest)
from rerankd.cache.memory import MemoryCache
from rerankd.cache.policy import DEFAULT_POLICY, CachePolicy
from rerankd.cache.redis_tier import RedisTier, connect, key_prefix
from rerankd.cache.tiers import ResultCache

__all__ = [
    "SCHEMA_VERSION", "CacheMode", "CachePolicy", "CacheSettings", "CachedScore", "CircuitBreaker", "CircuitState",
    "Claim", "DEFAULT_POLICY", "InFlight", "InFlightAbandoned", "MemoryCache", "PairKeys", "RedisTier", "ResultCache",
    "build_cache", "bytes_digest", "combine_digests", "connect", "encode_fields", "key_prefix", "pair_key",
    "text_digest",
]
