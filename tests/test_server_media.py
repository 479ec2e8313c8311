"""The server with a vision-language model: dialect parity with the Python API, and media safety (SSRF).

The tiny random Qwen3-VL (conftest ``qwen3_vl``) is served with a strict media policy. A loopback
HTTP server plays the remote media host on 127.0.0.2; names resolve through a patched
``socket.getaddrinfo`` (no real DNS). The server's policy trusts 127.0.0.2/32 only, as an operator
vouches for an internal media host with ``--trusted-media-networks``: that is how the success path
of remote fetching is reachable at all (the public-address rule refuses every loopback host by
design), while 127.0.0.1, 10.x, 169.254.x and ::1 stay refused.
"""

from __future__ import annotations

import base64
import io
import os
import socket
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")
httpx = pytest.importorskip("httpx")

from live_server import LiveServer  # noqa: E402
from media_helpers import coco_images  # noqa: E402
from test_media_fetch import BOMB_PNG, GOOD_PNG  # noqa: E402,F401 - the same bytes the fetch tests serve
from test_media_fetch import _Handler as MediaHandler  # noqa: E402
from rerankd import Document, Reranker  # noqa: E402
from rerankd.media import MediaPolicy  # noqa: E402
from rerankd.server import ServerSettings, create_app  # noqa: E402

MEDIA_HOST = "127.0.0.2"
NAMES = {"media.test": MEDIA_HOST, "evil.test": "127.0.0.1", "internal.test": "10.0.0.7",
         "meta.test": "169.254.169.254", "v6.test": "::1"}
ALLOWED = frozenset({*NAMES, "127.0.0.1", "10.0.0.7", "169.254.169.254", "::1"})
QUERY = "a group of people around a table with a cake"


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def media_port() -> Iterator[int]:
    httpd = ThreadingHTTPServer((MEDIA_HOST, 0), MediaHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module", autouse=True)
def fake_dns() -> Iterator[None]:
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host in NAMES:
            ip = NAMES[host]
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            address = (ip, port, 0, 0) if family == socket.AF_INET6 else (ip, port)
            return [(family, socket.SOCK_STREAM, 6, "", address)]
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in str(host) else socket.AF_INET, str(host))
        except OSError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return real(host, port, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        yield


@pytest.fixture(scope="module")
def engine(qwen3_vl: Path) -> Reranker:
    return Reranker.from_pretrained(qwen3_vl, dtype="fp32")


@pytest.fixture(scope="module")
def media_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media-root")
    (root / "ok.png").write_bytes(_png((10, 200, 10)))
    outside = tmp_path_factory.mktemp("outside") / "secret.png"
    outside.write_bytes(_png((1, 2, 3)))
    os.symlink(outside, root / "link.png")
    return root


@pytest.fixture(scope="module")
def server(engine: Reranker, media_root: Path) -> Iterator[LiveServer]:
    policy = MediaPolicy(allow_domains=ALLOWED, trusted_networks=(f"{MEDIA_HOST}/32",), allowed_local_root=media_root,
                         image_timeout_s=1.0, max_bytes=2**20, max_images_per_request=3, max_frames=4)
    settings = ServerSettings(log_requests=False, max_body_bytes=16 * 2**20, media=policy)
    with LiveServer(create_app({"vl": engine}, settings)) as live:
        yield live


def _post(server: LiveServer, body: dict[str, Any], path: str = "/v1/rerank") -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60)


def _raw_by_index(answer: dict[str, Any]) -> list[float]:
    return [r["relevance_score"] for r in sorted(answer["results"], key=lambda r: r["index"])]


# -- the dialects score as the Python API does --------------------------------------------------------


@pytest.fixture(scope="module")
def coco() -> list[bytes]:
    return [p.read_bytes() for p in coco_images(2)]


def test_jina_data_uri_images_score_as_the_python_api(server: LiveServer, engine: Reranker, coco: list[bytes]) -> None:
    documents = [{"image": _data_uri(coco[0], "image/jpeg")}, {"text": "a birthday cake"},
                 {"image": base64.b64encode(coco[1]).decode()}]  # bare base64, as Jina also takes
    r = _post(server, {"model": "vl", "query": QUERY, "documents": documents, "raw_scores": True})
    assert r.status_code == 200, r.text
    want = engine.score(QUERY, [Document.image(coco[0]), "a birthday cake", Document.image(coco[1])], raw=True)
    np.testing.assert_allclose(_raw_by_index(r.json()), want, rtol=1e-5, atol=1e-5)


def test_vllm_content_parts_score_as_the_python_api(server: LiveServer, engine: Reranker, coco: list[bytes]) -> None:
    uri = _data_uri(coco[0], "image/jpeg")
    documents = [
        {"content": [{"type": "image_url", "image_url": {"url": uri}}]},
        {"content": [{"type": "text", "text": "people eating"}, {"type": "image_url", "image_url": {"url": _data_uri(coco[1])}}]},
    ]
    r = _post(server, {"query": QUERY, "documents": documents, "raw_scores": True}, path="/rerank")
    assert r.status_code == 200, r.text
    want = engine.score(QUERY, [Document.image(coco[0]), {"text": "people eating", "image": coco[1]}], raw=True)
    np.testing.assert_allclose(_raw_by_index(r.json()), want, rtol=1e-5, atol=1e-5)
    # a multimodal query, and vLLM's one-object documents: one document per part
    query = {"content": [{"type": "image_url", "image_url": {"url": uri}}]}
    r = _post(server, {"query": query, "documents": {"content": [{"type": "text", "text": "a cake"},
                                                                 {"type": "text", "text": "a train"}]},
                       "raw_scores": True})
    assert r.status_code == 200, r.text
    want = engine.score(Document.image(coco[0]), ["a cake", "a train"], raw=True)
    np.testing.assert_allclose(_raw_by_index(r.json()), want, rtol=1e-5, atol=1e-5)


def test_native_dict_and_remote_image(server: LiveServer, engine: Reranker, media_port: int) -> None:
    url = f"http://media.test:{media_port}/img.png"
    r = _post(server, {"query": {"text": "a red square"}, "documents": [{"image": url, "text": "red"}, "blue"],
                       "raw_scores": True, "return_documents": True})
    assert r.status_code == 200, r.text
    want = engine.score("a red square", [{"image": GOOD_PNG, "text": "red"}, "blue"], raw=True)
    np.testing.assert_allclose(_raw_by_index(r.json()), want, rtol=1e-5, atol=1e-5)
    echoed = {res["index"]: res["document"] for res in r.json()["results"]}
    assert echoed[0] == {"image": url, "text": "red"}


def test_metrics_count_feature_cache_hits(server: LiveServer) -> None:
    image = _data_uri(_png((120, 60, 200)))
    for query in ("first query", "second query"):
        assert _post(server, {"query": query, "documents": [{"image": image}]}).status_code == 200
    text = httpx.get(f"{server.url}/metrics").text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith("rerankd_feature_cache") or line.startswith("rerankd_vision_forward")}
    assert values['rerankd_feature_cache_hits_total{model="vl"}'] >= 1
    assert values['rerankd_feature_cache_misses_total{model="vl"}'] >= 1
    assert values['rerankd_feature_cache_bytes{model="vl"}'] > 0
    info = httpx.get(f"{server.url}/info").json()
    assert info["media"]["max_images_per_request"] == 3 and info["models"]["vl"]["family"] == "vision-language"


# -- SSRF and caps: each a 4xx with a clear message, then a good request succeeds ---------------------


def _image_doc(url: str) -> dict[str, Any]:
    return {"query": QUERY, "documents": ["a cake", {"image": url}]}


def _cases(port: int, root: Path) -> list[tuple[str, dict[str, Any], int, str, tuple[str, ...]]]:
    red = _data_uri(_png((250, 0, 0)))
    return [
        ("domain not allowed", _image_doc(f"http://other.example:{port}/img.png"), 422, "media_refused",
         ("document 1", "'other.example'", "not an allowed media domain")),
        *[(f"private IP {host}", _image_doc(f"http://{host}:{port}/img.png"), 422, "media_refused",
           ("document 1", "not a public address")) for host in ("127.0.0.1", "10.0.0.7", "169.254.169.254", "[::1]")],
        *[(f"private name {name}", _image_doc(f"http://{name}:{port}/img.png"), 422, "media_refused",
           ("document 1", f"'{name}'", f"resolves to {NAMES[name]}", "not a public address"))
          for name in ("evil.test", "internal.test", "meta.test", "v6.test")],
        ("redirect to a private address",
         _image_doc(f"http://media.test:{port}/redirect?to=http://127.0.0.1:{port}/img.png"), 422, "media_refused",
         ("document 1", "redirect target", "not a public address")),
        ("oversized body", _image_doc(f"http://media.test:{port}/big-streamed"), 413, "media_too_large",
         ("document 1", "limit is 1.0 MiB")),
        ("slow body", _image_doc(f"http://media.test:{port}/slow"), 422, "media_timeout",
         ("document 1", "took longer than the 1 s")),
        ("decompression bomb", _image_doc(f"http://media.test:{port}/bomb.png"), 413, "media_too_large",
         ("document 1", "pixels but the limit is 50,000,000 pixels")),
        ("path outside the root", _image_doc("/etc/hostname"), 422, "media_refused",
         ("document 1", "outside the directory")),
        ("symlink out of the root", _image_doc(str(root / "link.png")), 422, "media_refused",
         ("document 1", "outside the directory", "symlinks are followed")),
        ("too many images", {"query": QUERY, "documents": [{"image": red}] * 4}, 413, "media_too_large",
         ("4 images", "limit is 3 per request")),
        ("too many frames", {"query": QUERY, "documents": ["x", {"video": [red] * 5}]}, 413, "media_too_large",
         ("document 1", "5 frames", "limit is 4 frames")),
        ("fps over the cap", {"query": QUERY, "documents": [{"video": [red] * 2}], "fps": 30}, 413, "media_too_large",
         ("fps 30", "limit is 2")),
        ("ftp scheme", _image_doc("ftp://media.test/img.png"), 422, "media_refused", ("document 1", "'ftp'")),
        ("media query refused", {"query": {"image": f"http://evil.test:{port}/img.png"}, "documents": ["a"]}, 422,
         "media_refused", ("the query", "not a public address")),
    ]


CASE_NAMES = [c[0] for c in _cases(0, Path("/"))]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_media_refusals(server: LiveServer, media_port: int, media_root: Path, name: str) -> None:
    _, body, status, kind, words = next(c for c in _cases(media_port, media_root) if c[0] == name)
    r = _post(server, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == kind, r.text
    for word in words:
        assert word in error["message"], error["message"]
    for leak in ("Traceback", "Errno", "httpcore", ".py"):
        assert leak not in error["message"]
    # the server keeps serving: a good remote image and a local one under the root
    ok = _post(server, {"query": QUERY, "documents": [{"image": f"http://media.test:{media_port}/img.png"},
                                                      {"image": str(media_root / "ok.png")}, {"image": "ok.png"}]})
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["results"]) == 3


def test_strict_defaults_refuse_remote_and_local(engine: Reranker) -> None:
    with LiveServer(create_app({"vl": engine}, ServerSettings(log_requests=False))) as live:
        remote = _post(live, _image_doc("https://images.example.com/cat.jpg")).json()["error"]
        assert remote["type"] == "media_refused" and "--allow-media-domains" in remote["message"]
        local = _post(live, _image_doc("/etc/hostname")).json()["error"]
        assert local["type"] == "media_refused" and "--allowed-local-media-path" in local["message"]
        inline = _post(live, {"query": QUERY, "documents": [{"image": _data_uri(_png((0, 0, 250)))}]})
        assert inline.status_code == 200, inline.text


def test_default_sampling_stays_within_the_servers_caps(server: LiveServer) -> None:
    # the server caps frames at 4: its default sampling (64 frames) is clamped, not refused
    frames = [_data_uri(_png((i * 60, 0, 0))) for i in range(3)]
    r = _post(server, {"query": QUERY, "documents": [{"video": frames}, "text"]})
    assert r.status_code == 200, r.text
    r = _post(server, {"query": QUERY, "documents": [{"video": frames}], "fps": 1, "max_frames": 4})
    assert r.status_code == 200, r.text
    r = _post(server, {"query": QUERY, "documents": ["text"], "max_frames": 8})
    assert r.status_code == 413 and "max_frames 8 was asked for but the limit is 4" in r.json()["error"]["message"]


def test_inline_media_is_result_cacheable_paths_and_urls_are_not() -> None:
    from rerankd.documents import as_document
    from rerankd.pipeline import _content_addressed

    uri = _data_uri(_png((5, 5, 5)))
    assert _content_addressed(as_document({"image": uri, "text": "x"}, "d"))
    assert _content_addressed(as_document({"video": [uri, b"raw bytes"]}, "d"))
    assert not _content_addressed(as_document({"image": "https://images.example.com/a.jpg"}, "d"))
    assert not _content_addressed(as_document({"video": [uri, "frames/f1.jpg"]}, "d"))
    assert not _content_addressed(as_document({"image": Path("a.jpg")}, "d"))


def test_vllm_score_with_content_parts(server: LiveServer, engine: Reranker, coco: list[bytes]) -> None:
    uri = _data_uri(coco[0], "image/jpeg")
    body = {"text_1": QUERY, "text_2": {"content": [{"type": "image_url", "image_url": {"url": uri}},
                                                    {"type": "text", "text": "a train"}]}, "raw_scores": True}
    r = _post(server, body, path="/score")
    assert r.status_code == 200, r.text
    want = engine.score(QUERY, [Document.image(coco[0]), "a train"], raw=True)
    np.testing.assert_allclose([d["score"] for d in r.json()["data"]], want, rtol=1e-5, atol=1e-5)
    body = {"text_1": {"content": [{"type": "image_url", "image_url": {"url": uri}}]}, "text_2": ["a cake"],
            "raw_scores": True}
    r = _post(server, body, path="/score")
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["score"] == pytest.approx(engine.score(Document.image(coco[0]), ["a cake"], raw=True)[0],
                                                         rel=1e-5, abs=1e-5)
