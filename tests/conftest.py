"""Shared fixtures: tiny random models built once per test session, real tokenizers, real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tiny_models  # noqa: E402

SENTENCES = [
    "Paris is the capital and largest city of France.",
    "Bananas are a yellow fruit rich in potassium.",
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The stock market fell sharply on Monday after weak earnings reports.",
    "France borders Belgium, Germany, Switzerland, Italy and Spain.",
]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


def _cached(models_dir: Path, name: str, needs: str, build) -> Path:  # type: ignore[no-untyped-def]
    """The tiny model ``name`` built once per session by ``build``; skips, naming it, without ``needs`` in ../shared."""
    tiny_models.skip_without_shared(needs)
    out = models_dir / name
    if not (out / "config.json").exists():
        build(out)
    return out


# What each tiny model is built from in ../shared: the fixtures skip, naming it, when it is absent.
MINILM = "tokenizers/ms-marco-MiniLM-L-6-v2"
QWEN3 = "tokenizers/qwen3"
SCIFACT_CORPUS = "data/scifact/corpus.jsonl"  # the XLM-R tokenizer is trained on it


@pytest.fixture(scope="session")
def bert_ce(models_dir: Path) -> Path:
    return _cached(models_dir, "bert-ce", MINILM, tiny_models.bert_cross_encoder)


@pytest.fixture(scope="session")
def bert_ce_2label(models_dir: Path) -> Path:
    return _cached(models_dir, "bert-ce-2", MINILM, lambda p: tiny_models.bert_cross_encoder(p, num_labels=2))


@pytest.fixture(scope="session")
def xlmr_ce(models_dir: Path) -> Path:
    return _cached(models_dir, "xlmr-ce", SCIFACT_CORPUS, tiny_models.xlmr_cross_encoder)


@pytest.fixture(scope="session")
def electra_ce(models_dir: Path) -> Path:
    return _cached(models_dir, "electra-ce", MINILM, lambda p: tiny_models.encoder_cross_encoder(p, "electra"))


@pytest.fixture(scope="session")
def qwen3_lm(models_dir: Path) -> Path:
    return _cached(models_dir, "qwen3-lm", QWEN3, tiny_models.qwen3_causal_lm)


@pytest.fixture(scope="session")
def qwen3_lm_untied(models_dir: Path) -> Path:
    return _cached(models_dir, "qwen3-lm-untied", QWEN3, lambda p: tiny_models.qwen3_causal_lm(p, tie=False))


@pytest.fixture(scope="session")
def qwen3_lm_small(models_dir: Path) -> Path:
    """The same family as ``qwen3_lm``, narrower (16 wide) and shallower (1 layer): a distillation student."""
    return _cached(models_dir, "qwen3-lm-small", QWEN3, lambda p: tiny_models.qwen3_causal_lm(p, hidden=16, layers=1))


@pytest.fixture(scope="session")
def bert_ce_small(models_dir: Path) -> Path:
    """The same family as ``bert_ce``, 16 wide and 1 layer deep."""
    return _cached(models_dir, "bert-ce-small", MINILM, lambda p: tiny_models.bert_cross_encoder(p, hidden=16, layers=1))


@pytest.fixture(scope="session")
def bert_ce_wide(models_dir: Path) -> Path:
    """``bert_ce`` 128 wide: heads of 32 dimensions, MiniLM's, which rerankd's CPU attention kernel runs."""
    return _cached(models_dir, "bert-ce-wide", MINILM, lambda p: tiny_models.bert_cross_encoder(p, hidden=128))


@pytest.fixture(scope="session")
def qwen3_lm_wide(models_dir: Path) -> Path:
    """``qwen3_lm`` with heads of 32 dimensions (4 query, 2 key heads), which rerankd's CPU attention kernel runs."""
    return _cached(models_dir, "qwen3-lm-wide", QWEN3, lambda p: tiny_models.qwen3_causal_lm(p, hidden=64, head_dim=32))


@pytest.fixture(scope="session")
def qwen3_seq_cls(models_dir: Path) -> Path:
    return _cached(models_dir, "qwen3-seq-cls", QWEN3, tiny_models.qwen3_seq_cls)


@pytest.fixture(scope="session")
def bi_encoder(models_dir: Path) -> Path:
    return _cached(models_dir, "bi-encoder", MINILM, tiny_models.bi_encoder)


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return list(SENTENCES)


@pytest.fixture(scope="session")
def local_ray():  # type: ignore[no-untyped-def]
    """One local Ray for every Ray test: 2 CPUs, no dashboard, loopback only; shut down at session end.

    Skips when the ``rerankd[ray]`` extra is not installed. Child processes join it with ``RAY_ADDRESS``
    set to the returned address.
    """
    ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'rerankd[ray]'")
    from rerankd.ray.cluster import connect

    connect(num_cpus=2)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def qwen3_vl(models_dir: Path) -> Path:
    return _cached(models_dir, "qwen3-vl", QWEN3, tiny_models.qwen3_vl)


@pytest.fixture(scope="session")
def qwen3_vl_small(models_dir: Path) -> Path:
    """The same family as ``qwen3_vl``, narrower (32 wide) with one text layer: a distillation student."""
    return _cached(models_dir, "qwen3-vl-small", QWEN3, lambda p: tiny_models.qwen3_vl(p, shape="small"))


@pytest.fixture
def torch_threads():  # type: ignore[no-untyped-def]
    """torch, with the process's thread count put back after the test whatever it did."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    yield torch
    torch.set_num_threads(before)
