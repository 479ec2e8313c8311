"""First-stage retrieval: BM25 (bm25s) and dense retrieval with any bi-encoder, indexes cached on disk."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from rerankd._optional import require
from rerankd.errors import InputError
from rerankd.evaluation.datasets import Doc, Run


def corpus_fingerprint(corpus: dict[str, Doc], *settings: Any) -> str:
    """A hash of every id and text plus the settings: cache keys never collide by concatenation."""
    digest = hashlib.sha256()
    digest.update(json.dumps([str(s) for s in settings]).encode())
    for doc_id, doc in corpus.items():
        for part in (doc_id, doc.title, doc.text):
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part.encode("utf-8"))
    return digest.hexdigest()[:24]


class BM25Retriever:
    """BM25 over title + text with bm25s, optional English (or other) stemming and stopwords.

    Example:
        >>> bm25 = BM25Retriever(data.corpus, stemmer="english", stopwords="en")   # doctest: +SKIP
        >>> run = bm25.search(data.queries, k=100)                                  # doctest: +SKIP
    """

    def __init__(self, corpus: dict[str, Doc], stemmer: str | None = "english", stopwords: str | None = "en",
                 cache_dir: str | Path | None = None) -> None:
        if not corpus:
            raise InputError("the corpus is empty; BM25 needs documents to index")
        self.bm25s = require("bm25s")
        self.ids = list(corpus)
        self.stopwords = stopwords
        self.stemmer = require("Stemmer").Stemmer(stemmer) if stemmer else None
        key = corpus_fingerprint(corpus, "bm25", stemmer, stopwords)
        path = Path(cache_dir) / f"bm25-{key}" if cache_dir else None
        if path is not None and (path / "params.index.json").exists():
            self.index = self.bm25s.BM25.load(str(path))
            return
        tokens = self.bm25s.tokenize([corpus[i].full_text for i in self.ids], stopwords=stopwords, stemmer=self.stemmer, show_progress=False)
        self.index = self.bm25s.BM25()
        self.index.index(tokens, show_progress=False)
        if path is not None:
            self.index.save(str(path))

    def search(self, queries: dict[str, str], k: int = 100) -> Run:
        qids = list(queries)
        if not qids:
            return {}
        tokens = self.bm25s.tokenize([queries[q] for q in qids], stopwords=self.stopwords, stemmer=self.stemmer, show_progress=False)
        docs, scores = self.index.retrieve(tokens, k=min(k, len(self.ids)), show_progress=False, n_threads=1)
        return {
            q: {self.ids[int(d)]: float(s) for d, s in zip(docs[row], scores[row]) if s > 0}
            for row, q in enumerate(qids)
        }


class DenseRetriever:
    """Exact nearest neighbours by cosine with a bi-encoder (the bundled all-MiniLM-L6-v2 by default).

    Corpus embeddings are computed with rerankd's engine (length-sorted token-budget batches) and
    cached on disk as ``.npy`` keyed by the corpus and the model.
    """

    def __init__(self, corpus: dict[str, Doc], model: Any = None, cache_dir: str | Path | None = None,
                 dtype: str | None = None, progress: bool = False) -> None:
        from rerankd.engine import Reranker

        self.reranker = model if isinstance(model, Reranker) else Reranker.from_pretrained(model, dtype=dtype)
        if self.reranker.family.kind != "bi-encoder":
            raise InputError(f"dense retrieval needs a bi-encoder; {self.reranker.name} is a {self.reranker.family.kind}")
        self.ids = list(corpus)
        settings = (self.reranker.name, self.reranker.family.max_length, self.reranker.backend.describe().get("dtype"))
        path = Path(cache_dir) / f"dense-{corpus_fingerprint(corpus, 'dense', *settings)}.npy" if cache_dir else None
        if path is not None and path.exists():
            self.embeddings = np.load(path)
        else:
            self.embeddings = self.embed([corpus[i].full_text for i in self.ids], progress=progress)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, self.embeddings)

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Unit-length embeddings, one row per text."""
        vectors = self.reranker.run_sequences(self.reranker.family.encode_texts(texts), progress=progress)
        return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def search(self, queries: dict[str, str], k: int = 100) -> Run:
        qids = list(queries)
        if not qids:
            return {}
        scores = self.embed([queries[q] for q in qids]) @ self.embeddings.T
        k = min(k, len(self.ids))
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        return {q: {self.ids[int(d)]: float(scores[row, d]) for d in top[row]} for row, q in enumerate(qids)}
