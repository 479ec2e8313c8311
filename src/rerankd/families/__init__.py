"""Reranker families: how each kind of model reads a (query, document) pair and what its score means."""

from rerankd.families.base import Encoded, Family, FamilyKind, PreparedRequest
from rerankd.families.bi_encoder import BiEncoderFamily
from rerankd.families.cross_encoder import CrossEncoderFamily
from rerankd.families.detect import detect_kind, load_family
from rerankd.families.llm_yes_no import LlmYesNoFamily

__all__ = [
    "BiEncoderFamily",
    "CrossEncoderFamily",
    "Encoded",
    "Family",
    "FamilyKind",
    "LlmYesNoFamily",
    "PreparedRequest",
    "detect_kind",
    "load_family",
]
