"""Quality measurement: datasets, first-stage retrieval, reranking runs, metrics and reports."""

from rerankd.evaluation.datasets import BeirDataset, Doc, load_beir, read_trec_qrels, read_trec_run, write_trec_run
from rerankd.evaluation.metrics import EvalResult, evaluate
from rerankd.evaluation.rerank_run import RerankOutcome, rerank
from rerankd.evaluation.stats import PairedTest, paired_test

__all__ = ["BeirDataset", "Doc", "EvalResult", "PairedTest", "RerankOutcome", "evaluate", "load_beir", "paired_test", "read_trec_qrels",
           "read_trec_run", "rerank", "write_trec_run"]
