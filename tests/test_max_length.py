"""Which max_length a model loads with: a saved student's own (its tokenizer's model_max_length), the family
default for hub models whose tokenizers carry the context window or the "no limit" sentinel, and the
caller's explicit max_length over both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rerankd.families import load_family
from rerankd.families.detect import default_max_length

#: What transformers writes for a tokenizer without a limit (int(1e30)).
NO_LIMIT = 1000000000000000019884624838656


@pytest.mark.parametrize(("kind", "saved", "expected"), [
    ("llm-yes-no", 131072, 8192),          # Qwen3-Reranker's tokenizer: the context window, not the reranking length
    ("llm-yes-no", NO_LIMIT, 8192),
    ("llm-yes-no", None, 8192),
    ("llm-yes-no", 256, 256),              # a student saved at 256
    ("llm-yes-no", 9000, 8192),
    ("vision-language", 131072, 10240),
    ("vision-language", 262144, 10240),
    ("vision-language", NO_LIMIT, 10240),
    ("vision-language", 9000, 9000),
    ("vision-language", 256, 256),
    ("cross-encoder", 256, 256),           # the rule the cross-encoder always had, unchanged
    ("cross-encoder", 4096, 4096),
    ("cross-encoder", NO_LIMIT, 512),      # → max_position_embeddings
])
def test_default_max_length_reads_the_tokenizer_limit(tmp_path: Path, kind: str, saved: int | None, expected: int) -> None:
    if saved is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": saved}))
    assert default_max_length(kind, tmp_path, {"max_position_embeddings": 512}) == expected  # type: ignore[arg-type]


def _saved_student(source: Path, out: Path, max_length: int) -> Path:
    """``source`` saved the way ``rerankd train``/``distill`` saves a student trained at ``max_length``."""
    from rerankd.training.models import load_trainable

    load_trainable(source, max_length=max_length).save(out, max_length)
    saved = json.loads((out / "tokenizer_config.json").read_text())["model_max_length"]
    assert saved == max_length
    return out


@pytest.mark.parametrize("fixture", ["qwen3_lm", "qwen3_vl"])
def test_saved_student_loads_at_its_trained_length_and_explicit_wins(fixture: str, request: pytest.FixtureRequest,
                                                                     tmp_path: Path) -> None:
    from rerankd import Reranker

    source: Path = request.getfixturevalue(fixture)
    hub_default = {"qwen3_lm": 8192, "qwen3_vl": 10240}[fixture]
    # The fixture's tokenizer is the real Qwen3 one, model_max_length 131072: the family default holds.
    assert json.loads((source / "tokenizer_config.json").read_text())["model_max_length"] == 131072
    assert load_family(source).max_length == hub_default

    student = _saved_student(source, tmp_path / "student", 256)
    assert load_family(student).max_length == 256
    assert load_family(student, max_length=1024).max_length == 1024   # above the saved length too
    assert load_family(student, max_length=64).max_length == 64
    engine = Reranker.from_pretrained(str(student), dtype="fp32")
    assert engine.describe()["max_length"] == 256                     # what `rerankd info` prints
    # ~800 tokens: whole under the family default, cut to the student's 256 (a VL sequence keeps its 5 answer tokens).
    results = {r.index: r for r in engine.rank("vitamin d", ["bone density", "bone density " * 400]).results}
    short, long = results[0], results[1]
    assert long.truncated and long.tokens in (256, 256 + 5) and not short.truncated
