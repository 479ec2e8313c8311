"""rerankd: a reranking engine that scores exactly like each model's reference implementation.

Example:
    >>> from rerankd import Reranker
    >>> reranker = Reranker.from_pretrained()     # bundled all-MiniLM-L6-v2, offline
    >>> reranker.rank("what is rerankd?", ["rerankd reorders documents", "bananas"]).results[0].index
    0
"""

from rerankd.batching import BatchLimits
from rerankd.documents import Document
from rerankd.engine import Reranker
from rerankd.pipeline import RequestScores
from rerankd.errors import (
    EmptyDocumentsError,
    EmptyQueryError,
    InferenceError,
    InputError,
    InputTooLargeError,
    InvalidDocumentError,
    MissingDependencyError,
    ModelAccessError,
    ModelError,
    ModelNotFoundError,
    OverloadedError,
    QualityBoundError,
    RerankdError,
    TooManyDocumentsError,
    UnsupportedModelError,
)
from rerankd.types import RerankResult, ScoredDocument

__version__ = "0.1.0"

__all__ = [
    "BatchLimits",
    "Document",
    "EmptyDocumentsError",
    "EmptyQueryError",
    "InferenceError",
    "InputError",
    "InputTooLargeError",
    "InvalidDocumentError",
    "MissingDependencyError",
    "ModelAccessError",
    "ModelError",
    "ModelNotFoundError",
    "OverloadedError",
    "QualityBoundError",
    "RerankResult",
    "Reranker",
    "RequestScores",
    "RerankdError",
    "ScoredDocument",
    "TooManyDocumentsError",
    "UnsupportedModelError",
    "__version__",
]
