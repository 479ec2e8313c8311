"""IR datasets from local files: BEIR folders, TREC qrels and run files, MTEB-reranking JSONL, image corpora.

Image corpora (for vision-language rerankers) come in two layouts:

- a BEIR folder whose ``corpus.jsonl`` lines carry an ``image`` field, a path relative to the folder
  (``{"_id": "790", "image": "images/000000000790.jpg", "text": ""}``), with queries and qrels as usual;
- a captions folder (COCO style, e.g. ../shared/data/coco-mini): ``captions.jsonl`` lines
  ``{"image": "images/<file>", "captions": [...]}``, read as caption→image retrieval: every image is a
  document (its id the file's stem), every caption a query (``<stem>-<k>``) whose one relevant
  document is its image.

Every reader names the file, the line and the field when a line is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from rerankd.errors import InputError

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Doc:
    """A corpus document. ``full_text`` is what models read: the title, a space, the text (BEIR's convention).

    ``image`` is the absolute path of the document's image (image corpora), or None.
    """

    title: str
    text: str
    image: str | None = None

    @property
    def full_text(self) -> str:
        return f"{self.title} {self.text}".strip()

    @property
    def has_content(self) -> bool:
        """Whether there is anything to score (documents without it are ranked last)."""
        return bool(self.image or self.full_text.strip())

    def document(self) -> Any:
        """What a reranker reads: the text, or ``{"image": path, "text": ...}`` for an image document."""
        if self.image is None:
            return self.full_text
        return {"image": self.image, **({"text": self.full_text} if self.full_text else {})}


@dataclass
class BeirDataset:
    """A corpus, the queries judged in one split, and their graded judgments."""

    corpus: dict[str, Doc]
    queries: dict[str, str]
    qrels: Qrels
    name: str = ""
    split: str = "test"

    def subset(self, query_ids: Iterable[str]) -> "BeirDataset":
        """The same corpus with only the given queries (and their judgments)."""
        keep = [q for q in query_ids if q in self.queries]
        return BeirDataset(self.corpus, {q: self.queries[q] for q in keep}, {q: self.qrels.get(q, {}) for q in keep},
                           self.name, self.split)


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) per JSON line; a ``.parquet`` file gives (row number, row) with the same fields."""
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    if path.suffix == ".parquet":
        yield from _parquet_rows(path)
        return
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise InputError(f"{path}:{number}: expected a JSON object")
            yield number, row


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    from rerankd._optional import require

    parquet = require("pyarrow.parquet")
    number = 0
    for batch in parquet.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def read_candidates(path: str | Path) -> Run:
    """First-stage candidates: a TREC run, or JSONL/Parquet rows ``{"qid", "docid"[, "score"]}`` or
    ``{"qid", "docids": [...]}`` (best first; without scores, the order given is the ranking).

    Example:
        >>> read_candidates("bm25.trec")                             # doctest: +SKIP
        {'1': {'184': 13.2, '29': 12.9}}
    """
    path = Path(path)
    if path.suffix not in (".jsonl", ".json", ".parquet"):
        return read_trec_run(path)
    run: Run = {}
    for number, row in _json_lines(path):
        qid = _field(path, number, row, "qid")
        docs = run.setdefault(qid, {})
        if "docids" in row:
            ids = [str(d) for d in _field(path, number, row, "docids", list)]
        else:
            ids = [_field(path, number, row, "docid")]
        for docid in ids:
            score = row.get("score") if "docid" in row else None
            # Without a score, each later candidate ranks below the earlier ones of its query.
            docs[docid] = float(score) if isinstance(score, (int, float)) else -float(len(docs))
    return run


def _field(path: Path, number: int, row: dict[str, Any], name: str, kind: type = str, required: bool = True) -> Any:
    if name not in row:
        if required:
            raise InputError(f"{path}:{number}: missing field {name!r}")
        return kind()
    value = row[name]
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # ids are sometimes numbers in the wild
    if not isinstance(value, kind):
        raise InputError(f"{path}:{number}: field {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def read_corpus(path: Path) -> dict[str, Doc]:
    """corpus.jsonl: ``_id``, ``text`` and optional ``title``; or an ``image`` path (relative to the folder)."""
    corpus = {}
    for n, row in _json_lines(path):
        image = _field(path, n, row, "image", required=False) or None
        text = _field(path, n, row, "text", required=image is None)
        corpus[_field(path, n, row, "_id")] = Doc(_field(path, n, row, "title", required=False) or "", text,
                                                  _image_path(path, n, image) if image else None)
    return corpus


def _image_path(path: Path, number: int, image: str) -> str:
    resolved = (path.parent / image).resolve()
    if not resolved.is_file():
        raise InputError(f"{path}:{number}: field 'image' names {image!r}, which is not a file under {path.parent}")
    return str(resolved)


def is_image_corpus(corpus: dict[str, Doc]) -> bool:
    return any(doc.image is not None for doc in corpus.values())


def load_captions(path: str | Path) -> BeirDataset:
    """A captions folder (``captions.jsonl``: ``{"image", "captions": [...]}``) as caption→image retrieval.

    Example:
        >>> data = load_captions("../shared/data/coco-mini")    # doctest: +SKIP
        >>> len(data.corpus), len(data.queries), data.qrels["000000000790-0"]
        (40, 200, {'000000000790': 1})
    """
    root = Path(path)
    source = root / "captions.jsonl"
    corpus: dict[str, Doc] = {}
    queries: dict[str, str] = {}
    qrels: Qrels = {}
    for n, row in _json_lines(source):
        image = _field(source, n, row, "image")
        captions = _field(source, n, row, "captions", list)
        if not all(isinstance(c, str) for c in captions):
            raise InputError(f"{source}:{n}: field 'captions' must be a list of strings")
        doc_id = Path(image).stem
        if doc_id in corpus:
            raise InputError(f"{source}:{n}: image {image!r} is listed twice")
        corpus[doc_id] = Doc("", "", _image_path(source, n, image))
        for k, caption in enumerate(captions):
            queries[f"{doc_id}-{k}"] = caption
            qrels[f"{doc_id}-{k}"] = {doc_id: 1}
    if not corpus:
        raise InputError(f"{source} lists no images")
    return BeirDataset(corpus, queries, qrels, root.name, "captions")


def read_queries(path: Path) -> dict[str, str]:
    return {_field(path, n, row, "_id"): _field(path, n, row, "text") for n, row in _json_lines(path)}


def read_beir_qrels(path: Path) -> Qrels:
    """qrels/<split>.tsv: ``query-id  corpus-id  score`` with a header line, graded scores."""
    qrels: Qrels = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            parts = line.rstrip("\n").split("\t")
            if number == 1 and parts[0] == "query-id":
                continue
            if not line.strip():
                continue
            if len(parts) != 3:
                raise InputError(f"{path}:{number}: expected 3 tab-separated fields (query-id, corpus-id, score), got {len(parts)}")
            try:
                score = int(float(parts[2]))
            except ValueError as exc:
                raise InputError(f"{path}:{number}: field 'score' must be a number, got {parts[2]!r}") from exc
            qrels.setdefault(parts[0], {})[parts[1]] = score
    return qrels


def load_beir(path: str | Path, split: str = "test") -> BeirDataset:
    """Read a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv); keeps the queries judged in ``split``.

    Example:
        >>> data = load_beir("../shared/data/scifact", split="train")   # doctest: +SKIP
        >>> len(data.queries), len(data.corpus)
        (809, 5183)
    """
    root = Path(path)
    if not (root / "corpus.jsonl").exists() and (root / "captions.jsonl").is_file():
        return load_captions(root)  # an image-captions folder: caption→image retrieval
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise InputError(f"{root} has no qrels/{split}.tsv; available splits: {available or 'none'}. To evaluate on "
                         f"'{split}', add qrels/{split}.tsv (query-id, corpus-id, score; BEIR's own file) and its queries "
                         "to queries.jsonl")
    qrels = read_beir_qrels(qrels_path)
    all_queries = read_queries(root / "queries.jsonl")
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        raise InputError(f"{qrels_path} judges queries missing from queries.jsonl, e.g. {missing[0]!r}")
    queries = {q: all_queries[q] for q in qrels}
    return BeirDataset(read_corpus(root / "corpus.jsonl"), queries, qrels, root.name, split)


def read_trec_qrels(path: str | Path) -> Qrels:
    """TREC qrels: ``qid iteration docid relevance`` per line."""
    qrels: Qrels = {}
    for number, parts in _whitespace_lines(Path(path), 4, "qid iteration docid relevance"):
        try:
            qrels.setdefault(parts[0], {})[parts[2]] = int(parts[3])
        except ValueError as exc:
            raise InputError(f"{path}:{number}: field 'relevance' must be an integer, got {parts[3]!r}") from exc
    return qrels


def read_trec_run(path: str | Path) -> Run:
    """TREC run: ``qid Q0 docid rank score tag`` per line."""
    run: Run = {}
    for number, parts in _whitespace_lines(Path(path), 6, "qid Q0 docid rank score tag"):
        try:
            run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
        except ValueError as exc:
            raise InputError(f"{path}:{number}: field 'score' must be a number, got {parts[4]!r}") from exc
    return run


def write_trec_run(run: Run, path: str | Path, tag: str = "rerankd") -> Path:
    """Write a run best first per query (ties by docid, so the file is deterministic)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for qid in sorted(run):
            ranked = sorted(run[qid].items(), key=lambda item: (-item[1], item[0]))
            for rank, (docid, score) in enumerate(ranked, start=1):
                fh.write(f"{qid} Q0 {docid} {rank} {score:.8f} {tag}\n")
    return out


def _whitespace_lines(path: Path, fields: int, layout: str) -> Iterator[tuple[int, list[str]]]:
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != fields:
                raise InputError(f"{path}:{number}: expected {fields} fields ({layout}), got {len(parts)}")
            yield number, parts


@dataclass(frozen=True)
class RerankingExample:
    query: str
    positives: list[str] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)


def load_mteb_reranking(path: str | Path) -> list[RerankingExample]:
    """MTEB-reranking JSONL: ``{"query": str, "positive": [str], "negative": [str]}`` per line."""
    p = Path(path)
    examples = []
    for number, row in _json_lines(p):
        query = _field(p, number, row, "query")
        positives = _field(p, number, row, "positive", list)
        negatives = _field(p, number, row, "negative", list, required=False)
        for name, values in (("positive", positives), ("negative", negatives)):
            if not all(isinstance(v, str) for v in values):
                raise InputError(f"{p}:{number}: field {name!r} must be a list of strings")
        examples.append(RerankingExample(query, positives, negatives))
    return examples


def mteb_as_beir(examples: list[RerankingExample], name: str = "mteb") -> tuple[BeirDataset, Run]:
    """An MTEB-reranking set as a BEIR dataset plus its candidate run (positives and negatives per query)."""
    corpus: dict[str, Doc] = {}
    queries: dict[str, str] = {}
    qrels: Qrels = {}
    candidates: Run = {}
    for i, example in enumerate(examples):
        qid = f"q{i}"
        queries[qid] = example.query
        qrels[qid] = {}
        candidates[qid] = {}
        for label, texts in ((1, example.positives), (0, example.negatives)):
            for j, text in enumerate(texts):
                docid = f"{qid}-{'p' if label else 'n'}{j}"
                corpus[docid] = Doc("", text)
                qrels[qid][docid] = label
                candidates[qid][docid] = 0.0
    return BeirDataset(corpus, queries, qrels, name), candidates


def read_qrels(path: str | Path) -> Qrels:
    """Judgments from a BEIR ``.tsv`` (3 tab-separated fields, optional header) or a TREC qrels file (4 fields)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p} does not exist")
    with open(p, encoding="utf-8") as fh:
        first = next((line for line in fh if line.strip()), "")
    return read_beir_qrels(p) if len(first.rstrip("\n").split("\t")) == 3 else read_trec_qrels(p)
