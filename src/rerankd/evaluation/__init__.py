"""Quality measurement: datasets, first-stage retrieval, reranking runs, metrics and reports."""

from rerankd.evaluation.datasets import BeirDataset, Doc, load_beir, read_trec_qrels, read_trec_run, write_trec_run
from rerankd.evaluation.metrics import EvalResult, evaluate

__all__ = ["BeirDataset", "Doc", "EvalResult", "evaluate", "load_beir", "read_trec_qrels", "read_trec_run", "write_trec_run"]
