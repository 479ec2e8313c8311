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
        for part in (doc_id, doc.title, doc.text, *((doc.image,) if doc.image else ())):
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part.encode("utf-8"))
    return digest.hexdigest()[:24]


def embed_texts(reranker: Any, texts: list[str], max_tokens: int | None = None, progress: bool = False) -> np.ndarray:
    """Unit-length float32 embeddings of ``texts`` with a bi-encoder :class:`~rerankd.engine.Reranker`."""
    vectors = reranker.pipeline.execute(reranker.family.encode_texts(texts, max_tokens), progress=progress)
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)


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
        return embed_texts(self.reranker, texts, progress=progress)

    def search(self, queries: dict[str, str], k: int = 100) -> Run:
        qids = list(queries)
        if not qids:
            return {}
        scores = self.embed([queries[q] for q in qids]) @ self.embeddings.T
        k = min(k, len(self.ids))
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        return {q: {self.ids[int(d)]: float(scores[row, d]) for d in top[row]} for row, q in enumerate(qids)}

    def rescore(self, queries: dict[str, str], candidates: Run) -> Run:
        """Cosine scores of each query's given candidates: the bi-encoder reranking them, from the cached embeddings.

        Equal to reranking with this bi-encoder through :func:`rerankd.evaluation.rerank_run.rerank`
        (same model, precision and text), without embedding the documents again.
        """
        qids = [q for q in queries if candidates.get(q)]
        if not qids:
            return {}
        row_of = {doc_id: i for i, doc_id in enumerate(self.ids)}
        unknown = next((d for q in qids for d in candidates[q] if d not in row_of), None)
        if unknown is not None:
            raise InputError(f"candidate document {unknown!r} is not in the corpus this retriever embedded")
        query_vectors = self.embed([queries[q] for q in qids])
        return {q: {d: float(self.embeddings[row_of[d]] @ query_vectors[i]) for d in candidates[q]} for i, q in enumerate(qids)}


RETRIEVERS = ("bm25", "dense")
#: ``--first-stage all`` (every document a candidate of every query) is allowed up to this many documents:
#: it is how an image corpus is evaluated without a run file (there is no BM25 over pixels).
ALL_CANDIDATES_MAX = 2000


def all_candidates(corpus: dict[str, Doc], queries: dict[str, str]) -> Run:
    """Every document a candidate of every query (score 0: the reranker orders them all)."""
    if len(corpus) > ALL_CANDIDATES_MAX:
        raise InputError(
            f"--first-stage all ranks every document for every query, but the corpus has {len(corpus)} documents "
            f"(the limit is {ALL_CANDIDATES_MAX}); give candidates with --first-stage run:FILE")
    return {q: dict.fromkeys(corpus, 0.0) for q in queries}


def first_stage_retriever(
    kind: str,
    corpus: dict[str, Doc],
    *,
    cache_dir: str | Path | None = None,
    stemmer: str | None = "english",
    stopwords: str | None = "en",
    dense_model: Any = None,
    dtype: str | None = None,
    progress: bool = False,
) -> BM25Retriever | DenseRetriever:
    """A retriever over ``corpus`` (``"bm25"`` or ``"dense"``), indexed once and searched as often as needed."""
    if kind == "bm25":
        return BM25Retriever(corpus, stemmer=stemmer, stopwords=stopwords, cache_dir=cache_dir)
    if kind == "dense":
        return DenseRetriever(corpus, model=dense_model, cache_dir=cache_dir, dtype=dtype, progress=progress)
    raise InputError(f"unknown retriever {kind!r}; use one of {RETRIEVERS}")


def first_stage_run(
    spec: str,
    corpus: dict[str, Doc],
    queries: dict[str, str],
    *,
    k: int = 100,
    cache_dir: str | Path | None = None,
    stemmer: str | None = "english",
    stopwords: str | None = "en",
    dense_model: Any = None,
    dtype: str | None = None,
    progress: bool = False,
) -> tuple[str, Run]:
    """The candidates: ``"bm25"``, ``"dense"`` (a bi-encoder, the bundled one by default), ``"all"`` (every
    document, for small corpora) or ``"run:FILE"`` (TREC run).

    An image corpus has no text to retrieve with: ``bm25`` / ``dense`` are refused for it, and the
    CLI picks ``all`` for it unless a run file is given.

    Returns a label for reports and the run cut to the queries asked for.
    """
    from rerankd.evaluation.datasets import is_image_corpus

    if spec == "all":
        return "all", all_candidates(corpus, queries)
    if spec in RETRIEVERS and is_image_corpus(corpus):
        raise InputError(f"the corpus is images: there is no {spec} first stage over them; use --first-stage all "
                         f"(up to {ALL_CANDIDATES_MAX} documents) or --first-stage run:FILE")
    if spec in RETRIEVERS:
        engine = first_stage_retriever(spec, corpus, cache_dir=cache_dir, stemmer=stemmer, stopwords=stopwords,
                                       dense_model=dense_model, dtype=dtype, progress=progress)
        if isinstance(engine, DenseRetriever):
            label = f"dense:{Path(engine.reranker.name).name}"
        else:
            label = "bm25" + ("+stem" if stemmer else "") + ("+stop" if stopwords else "")
        return label, engine.search(queries, k)
    path = Path(spec.removeprefix("run:"))
    if not path.is_file():
        raise InputError(f"first stage {spec!r} is neither 'bm25', 'dense' nor run:FILE naming an existing TREC run file "
                         "(nor 'all': every document a candidate)")
    from rerankd.evaluation.datasets import read_trec_run

    run = read_trec_run(path)
    unknown = next((d for docs in run.values() for d in docs if d not in corpus), None)
    if unknown is not None:
        raise InputError(f"{path} ranks document {unknown!r}, which is not in the corpus; was it made on another dataset?")
    return path.stem, {q: run[q] for q in queries if q in run}
