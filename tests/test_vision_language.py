"""Qwen3-VL-Reranker: rerankd's vision-language family and torch backend against the official computation.

The oracle is tests/vl_reference.py (the reference reranker's steps on transformers'
Qwen3VLForConditionalGeneration, one pair at a time); the model is a tiny random Qwen3-VL with the
real tokenizer, the images are real COCO photos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rerankd import Document
from rerankd.documents import Part
from rerankd.errors import InvalidDocumentError, MediaError
from rerankd.families import load_family
from rerankd.media import MediaPolicy
from rerankd.media.settings import MediaSettings
from tiny_models import requires_shared

pytestmark = requires_shared("tokenizers/qwen3", "data/coco-mini")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from media_helpers import coco_images  # noqa: E402
from vl_reference import Qwen3VLRerankerReference, Side  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module")
def images() -> list[Path]:
    return coco_images(4)


@pytest.fixture(scope="module")
def reference(qwen3_vl: Path) -> Qwen3VLRerankerReference:
    return Qwen3VLRerankerReference(qwen3_vl)


def _backend(model_dir: Path, packed: bool):  # type: ignore[no-untyped-def]
    from rerankd.backends.torch_backend import TorchBackend

    family = load_family(model_dir)
    return family, TorchBackend(family, device="cpu", dtype="fp32", packed=packed)


@pytest.fixture(scope="module")
def packed(qwen3_vl: Path):  # type: ignore[no-untyped-def]
    return _backend(qwen3_vl, packed=True)


@pytest.fixture(scope="module")
def padded(qwen3_vl: Path):  # type: ignore[no-untyped-def]
    return _backend(qwen3_vl, packed=False)


def _side(document: Document) -> Side:
    """The reference's form of one side (videos, images, texts)."""
    from rerankd.media.video import process_video

    return Side(texts=[p.value for p in document.parts if p.modality == "text"],
                images=[p.value for p in document.parts if p.modality == "image"],
                videos=[process_video(p.value, policy=MediaPolicy.permissive()) for p in document.parts
                        if p.modality == "video"])


def _cases(images: list[Path]) -> dict[str, tuple[Document, Document]]:
    a, b, c, d = (str(p) for p in images)
    return {
        "text-text": (Document.text("a birthday cake"), Document.text("People sitting at a table with cake.")),
        "text-image": (Document.text("a birthday cake"), Document.image(a)),
        "text-image+text": (Document.text("horses"), Document.of(Document.text("a caption"), Document.image(b))),
        "image-text": (Document.image(c), Document.text("A laptop on a desk.")),
        "multi-image": (Document.of(Document.image(a), Document.text("which?")), Document.of(Document.image(b), Document.image(d))),
        "null-document": (Document.text("anything"), Document(())),
        "null-query": (Document(()), Document.image(a)),
        "video-frames": (Document.text("a moving scene"), Document.video([a, b, c])),
    }


def _forward(family, backend, query: Document, documents: list[Document]) -> np.ndarray:  # type: ignore[no-untyped-def]
    return backend.forward(family.prepare(query, documents).sequences)


def test_detected_as_vision_language(qwen3_vl: Path) -> None:
    family = load_family(qwen3_vl)
    assert family.kind == "vision-language"
    assert family.head.kind == "yes-no-row" and family.head.vision
    assert (family.yes_id, family.no_id) == (9693, 2152)
    assert family.max_length == 10240
    assert family.modalities == {"text", "image", "video"}


def test_prompt_tokens_and_pixels_match_reference(packed, reference, images) -> None:  # type: ignore[no-untyped-def]
    family, _ = packed
    assert family.special_ids == set(reference.tokenizer.all_special_ids)
    for name, (query, document) in _cases(images).items():
        ref = reference.inputs(_side(query), _side(document))
        assert family.prompts(query, [document])[0] == ref.text, name
        seq = family.prepare(query, [document]).sequences[0]
        assert list(seq.input_ids) == ref.input_ids, name
        images_of = [v for v in seq.extras["visuals"] if v.kind == "image"]
        if ref.pixel_values is not None:
            ours = np.concatenate([v.pixel_values for v in images_of])
            np.testing.assert_allclose(ours, ref.pixel_values, atol=1e-6, err_msg=name)
            assert [v.grid_thw for v in images_of] == [tuple(g) for g in ref.image_grid_thw]
    # A 640×422 COCO photo: 640×416 pixels, grid (1, 26, 40), 260 image tokens.
    seq = family.prepare(Document.text("q"), [Document.image(str(images[0]))]).sequences[0]
    assert seq.extras["visuals"][0].grid_thw == (1, 26, 40)
    assert seq.input_ids.count(family.image_token_id) == 260
    assert seq.planned_cost == len(seq) + 260


def test_prompt_string_shape(packed) -> None:  # type: ignore[no-untyped-def]
    family, _ = packed
    text = family.prompts(Document.text("q"), [Document(())])[0]
    assert text.endswith("<Instruct>: Given a search query, retrieve relevant "
                         "candidates that answer the query.<Query>:q\n<Document>:NULL<|im_end|>\n<|im_start|>assistant\n")
    assert "<think>" not in text


def test_logits_match_reference(packed, reference, images) -> None:  # type: ignore[no-untyped-def]
    family, backend = packed
    for name, (query, document) in _cases(images).items():
        ours = float(_forward(family, backend, query, [document])[0])
        ref = reference.logit(_side(query), _side(document))
        assert abs(ours - ref) < TOL, (name, ours, ref)


def test_a_video_file_matches_the_reference(packed, padded, reference, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A video *file* (decoded and sampled by PyAV at 1 fps: 4 frames, 2 temporal patches with timestamps)
    scored end to end: prompt, token ids and the fp32 logit equal the reference's, packed and padded."""
    pytest.importorskip("av")
    from media_helpers import write_video

    clip = write_video(tmp_path / "clip.mkv")
    query, document = Document.text("a moving scene"), Document.video(str(clip))
    ref_inputs = reference.inputs(_side(query), _side(document))
    family, _ = packed
    seq = family.prepare(query, [document]).sequences[0]
    assert family.prompts(query, [document])[0] == ref_inputs.text
    assert list(seq.input_ids) == ref_inputs.input_ids
    assert seq.input_ids.count(family.video_token_id) == 2 * 20 * 28 // 4
    ref = reference.logit(_side(query), _side(document))
    for fam, backend in (packed, padded):
        ours = float(_forward(fam, backend, query, [document])[0])
        assert abs(ours - ref) < TOL, (ours, ref)


@pytest.fixture
def short_inputs(packed, reference):  # type: ignore[no-untyped-def]
    """The shared family and reference with max_length 400, restored afterwards."""
    family, backend = packed
    family.max_length = reference.max_length = 400
    yield family, backend, reference
    family.max_length = reference.max_length = 10240


def test_truncation_keeps_image_tokens(short_inputs, images) -> None:  # type: ignore[no-untyped-def]
    family, backend, reference = short_inputs
    query = Document.image(str(images[0]))
    document = Document.text("a long caption about a cake " * 40)
    ref = reference.inputs(_side(query), _side(document))
    seq = family.prepare(query, [document]).sequences[0]
    assert ref.truncated and seq.truncated
    assert list(seq.input_ids) == ref.input_ids
    assert len(seq) == 400 + 5  # specials kept: up to max_length + 5
    assert seq.input_ids.count(family.image_token_id) == 260
    ours = float(backend.forward([seq])[0])
    assert abs(ours - reference.logit(_side(query), _side(document))) < TOL
    short = family.prepare(query, [Document.text("short")]).sequences[0]
    assert not short.truncated


def test_packed_equals_padded_equals_one_at_a_time(packed, padded, images) -> None:  # type: ignore[no-untyped-def]
    family, packed_backend = packed
    _, padded_backend = padded
    query = Document.text("a birthday cake")
    documents = [Document.image(str(p)) for p in images] + [Document.text("a horse"),
                                                            Document.of(Document.image(str(images[1])), Document.text("x"))]
    sequences = family.prepare(query, documents).sequences
    together = packed_backend.forward(sequences)
    np.testing.assert_allclose(padded_backend.forward(sequences), together, atol=TOL)
    alone = np.array([float(packed_backend.forward([s])[0]) for s in sequences])
    np.testing.assert_allclose(alone, together, atol=TOL)
    assert len(set(np.round(together, 4))) > 3  # the documents are told apart
    # An image query: the shared prefix holds visual tokens (and their deepstack features) too.
    sequences = family.prepare(Document.of(Document.image(str(images[2])), Document.text("like this")),
                               documents[:3] + [Document.text("a desk")]).sequences
    together = packed_backend.forward(sequences)
    np.testing.assert_allclose(padded_backend.forward(sequences), together, atol=TOL)
    np.testing.assert_allclose([float(packed_backend.forward([s])[0]) for s in sequences], together, atol=TOL)


def test_documents_whose_pictures_share_a_grid_are_told_apart(packed, padded, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Pictures of one size have identical token ids (every image pad is one id) but other pixels: the
    shared prefix must stop at the first of them, not run through them."""
    from PIL import Image

    family, packed_backend = packed
    _, padded_backend = padded
    paths = []
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 256, (96, 128, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"same-size-{i}.png")
        paths.append(str(tmp_path / f"same-size-{i}.png"))
    for query in (Document.text("a birthday cake"), Document.of(Document.image(paths[0]), Document.text("like this"))):
        sequences = family.prepare(query, [Document.image(p) for p in paths]).sequences
        assert len({tuple(s.input_ids) for s in sequences}) == 1  # the ids cannot tell the documents apart
        together = packed_backend.forward(sequences)
        np.testing.assert_allclose([float(packed_backend.forward([s])[0]) for s in sequences], together, atol=TOL)
        np.testing.assert_allclose(padded_backend.forward(sequences), together, atol=TOL)
        assert len(set(np.round(together, 4))) == 3


def test_one_dimensional_positions_fail_parity(packed, reference, images) -> None:  # type: ignore[no-untyped-def]
    """The parity above depends on M-RoPE: with plain 1-D positions the image scores move."""
    from dataclasses import replace

    family, backend = packed
    query, document = Document.text("a birthday cake"), Document.image(str(images[0]))
    seq = family.prepare(query, [document]).sequences[0]
    flat = np.broadcast_to(np.arange(len(seq)), (3, len(seq))).copy()
    wrong = replace(seq, extras={**seq.extras, "position_ids": flat})
    ref = reference.logit(_side(query), _side(document))
    assert abs(float(backend.forward([seq])[0]) - ref) < TOL
    assert abs(float(backend.forward([wrong])[0]) - ref) > 100 * TOL


@pytest.fixture
def fresh_cache(packed, padded):  # type: ignore[no-untyped-def]
    """The packed backend with an empty feature cache, and the padded one with none (restored afterwards)."""
    from rerankd.backends.feature_cache import FeatureCache

    (family, backend), (_, uncached) = packed, padded
    saved = backend.feature_cache, uncached.feature_cache
    backend.feature_cache = backend.module.cache = FeatureCache()
    uncached.feature_cache = uncached.module.cache = None
    yield family, backend, uncached
    backend.feature_cache = backend.module.cache = saved[0]
    uncached.feature_cache = uncached.module.cache = saved[1]


def test_feature_cache_skips_the_vision_tower(fresh_cache, images) -> None:  # type: ignore[no-untyped-def]
    from rerankd import Reranker

    family, backend, uncached_backend = fresh_cache
    reranker = Reranker(family, backend)
    documents = [Document.image(str(p)) for p in images]
    calls, items = backend.module.vision_calls, backend.module.vision_items
    first = reranker.score("a birthday cake", documents, raw=True)
    assert backend.module.vision_calls == calls + 1 and backend.module.vision_items == items + len(images)
    calls = backend.module.vision_calls
    # The same pictures as bytes: same content hash, no vision forward.
    second = reranker.score("horses on a hill", [{"image": p.read_bytes()} for p in images], raw=True)
    assert backend.module.vision_calls == calls
    stats = backend.stats()["feature_cache"]
    assert stats["hits"] == len(images) and stats["misses"] == len(images) and stats["entries"] == len(images)
    uncached = Reranker(family, uncached_backend)
    before = uncached_backend.module.vision_calls
    np.testing.assert_allclose(uncached.score("a birthday cake", documents, raw=True), first, atol=TOL)
    np.testing.assert_allclose(uncached.score("horses on a hill", documents, raw=True), second, atol=TOL)
    assert uncached_backend.module.vision_calls == before + 2


def test_int8_dynamic_backend_reads_images_and_caches_their_features(qwen3_vl: Path, packed, images) -> None:  # type: ignore[no-untyped-def]
    from rerankd import Reranker

    family, fp32 = packed
    documents = [Document.image(str(p)) for p in images] + ["a dog on a couch", "a birthday cake with candles"]
    query = "a family with a birthday cake"
    exact = np.asarray(Reranker(family, fp32).score(query, documents, raw=True))
    int8 = Reranker.from_pretrained(qwen3_vl, backend="torch-int8")
    described = int8.describe()
    assert described["backend"] == "torch-int8" and described["dtype"] == "int8" and described["feature_cache_bytes"] > 0
    got = np.asarray(int8.score(query, documents, raw=True))
    # Dynamic int8 on a random tiny model: logits move by ~0.1 (measured 0.12), the order holds.
    assert np.abs(got - exact).max() < 0.3
    assert np.corrcoef(got, exact)[0, 1] > 0.95
    calls = int8.backend.module.vision_calls
    int8.score("horses on a hill", documents, raw=True)
    assert int8.backend.module.vision_calls == calls  # the same images: features from the cache


def test_feature_cache_is_bounded_in_bytes() -> None:
    from rerankd.backends.feature_cache import FeatureCache

    cache = FeatureCache(max_bytes=3 * 400)
    for i in range(5):
        cache.put(bytes([i]), (torch.zeros(100),))  # 400 bytes each
    assert cache.stats()["entries"] == 3 and cache.stats()["evictions"] == 2
    assert cache.get(bytes([0])) is None and cache.get(bytes([4])) is not None
    cache.put(b"big", (torch.zeros(1000),))  # larger than the cache: not kept
    assert cache.get(b"big") is None


def test_python_api_inputs_and_media_policy(qwen3_vl: Path, images) -> None:  # type: ignore[no-untyped-def]
    from rerankd import Reranker

    reranker = Reranker.from_pretrained(qwen3_vl, dtype="fp32")
    path = str(images[0])
    as_str = reranker.score("cake", [path], raw=True)  # a plain string is text
    as_doc = reranker.score("cake", [Document.image(path)], raw=True)
    as_dict = reranker.score({"text": "cake"}, [{"image": path}], raw=True)
    assert as_doc == pytest.approx(as_dict, abs=TOL) and as_str != pytest.approx(as_doc, abs=1e-3)
    ranked = reranker.rank("cake", [{"image": path}, "a horse", {"image": str(images[1]), "text": "hi"}], top_n=2,
                           instruction="Find the picture.")
    assert len(ranked.results) == 2
    assert reranker.score("cake", [{"video": [path, str(images[1])]}], max_frames=2, fps=1.0)
    # A strict policy (the server's kind) refuses local paths, naming the document.
    strict = reranker.pipeline.with_limits(reranker.pipeline.limits, media=MediaSettings(policy=MediaPolicy()))
    with pytest.raises(MediaError, match="document 0"):
        strict.score_many([strict.request("cake", [Document.image(path)])])
    with pytest.raises(MediaError, match="4 frames but the limit is 3"):
        reranker.pipeline.score_many([reranker.pipeline.request(
            "cake", [{"video": [path] * 4}], media=MediaSettings(policy=MediaPolicy.permissive(max_frames=3)))])
    with pytest.raises(MediaError, match="images"):
        reranker.pipeline.score_many([reranker.pipeline.request(
            "cake", [Document.image(path)] * 3, media=MediaSettings(policy=MediaPolicy.permissive(max_images_per_request=2)))])


def test_text_family_refuses_images(qwen3_lm: Path) -> None:
    from rerankd import Reranker

    reranker = Reranker.from_pretrained(qwen3_lm, dtype="fp32")
    with pytest.raises(InvalidDocumentError, match="document 0 holds image"):
        reranker.score("q", [Document((Part("image", b"..."),))])


def test_media_errors_name_the_request_document_behind_a_result_cache(packed, images) -> None:  # type: ignore[no-untyped-def]
    """With a result cache only the misses are prepared; a refusal still names the request's index."""
    from rerankd import Reranker
    from rerankd.cache import CacheSettings

    family, backend = packed
    reranker = Reranker(family, backend, cache=_memory_cache(CacheSettings))
    reranker.pipeline.media = MediaSettings(policy=MediaPolicy())  # the server's strict default
    reranker.score("cake", ["a cake"])
    with pytest.raises(MediaError, match="^document 1: "):
        reranker.score("cake", ["a cake", Document.image(str(images[0]))])


def _memory_cache(settings_type):  # type: ignore[no-untyped-def]
    from rerankd.cache import build_cache

    return build_cache(settings_type(mode="memory", size=100))
