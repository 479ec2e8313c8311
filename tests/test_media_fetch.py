"""Media fetching keeps to its policy: SSRF, redirects, byte caps, timeouts, bombs, local roots, counts.

A loopback HTTP server plays the remote side. Names resolve through a patched ``socket.getaddrinfo``
(no real DNS); loopback is reachable only where a test's policy trusts 127.0.0.1 explicitly.
"""

from __future__ import annotations

import io
import ipaddress
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from media_helpers import png_claiming
from rerankd.errors import (
    InputError,
    MediaError,
    MediaFetchError,
    MediaRefusedError,
    MediaTimeoutError,
    MediaTooLargeError,
)
from rerankd.media.fetch import MediaPolicy, decode_data_uri, fetch_url, is_public_address, read_media

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("httpcore")

from rerankd.media.images import load_image  # noqa: E402
from rerankd.media.video import video_from_frames  # noqa: E402


def _png(width: int = 40, height: int = 30) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


GOOD_PNG = _png()
BOMB_PNG = png_claiming(20000, 20000)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, length: bool = True) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        try:
            self._answer()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up on purpose (byte cap, timeout)

    def _answer(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/img.png":
            self._send(200, GOOD_PNG, {"Content-Type": "image/png"})
        elif url.path == "/bomb.png":
            self._send(200, BOMB_PNG, {"Content-Type": "image/png"})
        elif url.path == "/big-declared":
            self.send_response(200)
            self.send_header("Content-Length", str(50 * 2**20))
            self.end_headers()
            self.wfile.write(b"\x00" * 1024)
        elif url.path == "/big-streamed":
            # no Content-Length: the body ends when the connection closes (HTTP/1.0), so only counting
            # the bytes as they arrive can stop it
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\x00" * 65536)
        elif url.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD_PNG)))
            self.end_headers()
            self.wfile.write(GOOD_PNG[:10])
            self.wfile.flush()
            time.sleep(1.5)
            self.wfile.write(GOOD_PNG[10:])
        elif url.path == "/redirect":
            self._send(302, b"", {"Location": query["to"][0]})
        elif url.path == "/loop":
            self._send(302, b"", {"Location": "/loop"})
        else:
            self._send(404, b"not here")


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


NAMES = {
    "media.test": "127.0.0.1",
    "evil.test": "127.0.0.1",
    "internal.test": "10.0.0.7",
    "meta.test": "169.254.169.254",
    "v6.test": "::1",
    "mapped.test": "::ffff:127.0.0.1",
    "cgnat.test": "100.64.0.1",
}


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Names from NAMES resolve without DNS; IP literals resolve as usual; anything else fails."""
    real = socket.getaddrinfo
    calls: dict[str, int] = {}

    def getaddrinfo(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls[host] = calls.get(host, 0) + 1
        if host == "rebind.test":
            # first answer passes the check; any later lookup would point inside the network
            ip = "127.0.0.1" if calls[host] == 1 else "10.0.0.7"
        elif host in NAMES:
            ip = NAMES[host]
        else:
            try:
                socket.inet_pton(socket.AF_INET6 if ":" in str(host) else socket.AF_INET, str(host))
            except OSError:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
            return real(host, port, *args, **kwargs)
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        address = (ip, port, 0, 0) if family == socket.AF_INET6 else (ip, port)
        return [(family, socket.SOCK_STREAM, 6, "", address)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return calls


ALLOWED = frozenset({*NAMES, "rebind.test", "127.0.0.1", "10.0.0.7", "169.254.169.254", "::1"})
#: Every host allowed, no address trusted: only the public-address rule stands in the way.
STRICT = MediaPolicy(allow_domains=ALLOWED)
#: The loopback test server is trusted explicitly, as an operator would trust an internal media host.
# A generous deadline: these tests are about what is refused, and a loaded CI machine once took over
# 2 s to answer a redirect (the timeout itself is tested with its own short policy below).
LOOPBACK_OK = MediaPolicy(allow_domains=ALLOWED, trusted_networks=("127.0.0.1/32",), image_timeout_s=15.0)


def _no_internals(message: str) -> None:
    for leak in ("Errno", "Traceback", "httpcore", "socket", "[SSL", "object at 0x"):
        assert leak not in message, message


def test_remote_urls_are_off_by_default(server: int) -> None:
    with pytest.raises(MediaRefusedError, match=r"document 3: remote media URLs are disabled.*--allow-media-domains"):
        fetch_url(f"http://media.test:{server}/img.png", kind="image", policy=MediaPolicy(), where=3)


def test_domain_not_allowed(server: int) -> None:
    policy = MediaPolicy(allow_domains=frozenset({"example.com"}))
    with pytest.raises(MediaRefusedError, match=r"document 0: the image URL is on host 'media.test', which is not an "
                                                r"allowed media domain \(allowed: example.com\)"):
        fetch_url(f"http://media.test:{server}/img.png", kind="image", policy=policy, where=0)


def test_domain_matching() -> None:
    policy = MediaPolicy(allow_domains=frozenset({"Example.COM.", "203.0.113.9"}))
    assert policy.domain_allowed("example.com") and policy.domain_allowed("cdn.images.example.com")
    assert not policy.domain_allowed("example.com.evil.net")
    assert not policy.domain_allowed("badexample.com")
    assert policy.domain_allowed("203.0.113.9") and not policy.domain_allowed("1.203.0.113.9")
    assert MediaPolicy(allow_domains=frozenset({"*"})).domain_allowed("anything.org")
    from_flag = MediaPolicy(allow_domains="images.example.com, cdn.example.org")  # type: ignore[arg-type]
    assert from_flag.allow_domains == frozenset({"images.example.com", "cdn.example.org"})


@pytest.mark.parametrize("host", ["127.0.0.1", "10.0.0.7", "169.254.169.254", "[::1]"])
def test_private_address_by_ip(server: int, host: str) -> None:
    with pytest.raises(MediaRefusedError, match=r"document 2: the image URL has host .*, which is not a public "
                                                r"address \(private, loopback, link-local"):
        fetch_url(f"http://{host}:{server}/img.png", kind="image", policy=STRICT, where=2)


@pytest.mark.parametrize("name", ["evil.test", "internal.test", "meta.test", "v6.test", "mapped.test", "cgnat.test"])
def test_private_address_by_name(server: int, name: str) -> None:
    shown = ipaddress.ip_address(NAMES[name])
    with pytest.raises(MediaRefusedError, match=rf"the query: the image URL has host '{name}', which resolves to "
                                                rf"{shown}, not a public address"):
        fetch_url(f"http://{name}:{server}/img.png", kind="image", policy=STRICT, where="the query")


def test_public_address_rule() -> None:
    public = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"]
    private = ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
               "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "ff02::1", "::ffff:10.0.0.1",
               "2002:7f00:1::", "64:ff9b::a9fe:a9fe", "2001:0:4136:e378:8000:63bf:f5ff:fffe"]
    assert all(is_public_address(ipaddress.ip_address(a)) for a in public)
    assert not any(is_public_address(ipaddress.ip_address(a)) for a in private)


def test_good_fetch_from_a_trusted_address(server: int) -> None:
    image = load_image(f"http://media.test:{server}/img.png", policy=LOOPBACK_OK, where=1)
    assert image.mode == "RGB" and image.size == (40, 30)
    assert image.getpixel((0, 0)) == (200, 30, 60)


def test_the_checked_address_is_the_one_connected_to(server: int, fake_dns: dict[str, int]) -> None:
    # rebind.test answers 127.0.0.1 (trusted) once, then 10.0.0.7: a second lookup would be caught out
    data = fetch_url(f"http://rebind.test:{server}/img.png", kind="image", policy=LOOPBACK_OK)
    assert data == GOOD_PNG
    assert fake_dns["rebind.test"] == 1


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("http://169.254.169.254/latest/meta-data/", r"redirect target has host '169.254.169.254', which is not a public"),
        ("http://internal.test/admin", r"redirect target has host 'internal.test', which resolves to 10.0.0.7"),
        ("http://[::1]/", r"redirect target has host '::1', which is not a public"),
        ("http://not-allowed.example/x.png", r"redirect target is on host 'not-allowed.example', which is not an allowed"),
        ("ftp://media.test/x.png", r"redirect target uses scheme 'ftp'; only http and https are fetched"),
    ],
)
def test_redirect_targets_are_checked(server: int, target: str, message: str) -> None:
    with pytest.raises(MediaRefusedError, match=message) as caught:
        fetch_url(f"http://media.test:{server}/redirect?to={target}", kind="image", policy=LOOPBACK_OK, where=4)
    assert str(caught.value).startswith("document 4: ")


def test_a_good_redirect_is_followed(server: int) -> None:
    data = fetch_url(f"http://media.test:{server}/redirect?to=/img.png", kind="image", policy=LOOPBACK_OK)
    assert data == GOOD_PNG


def test_redirects_are_limited(server: int) -> None:
    with pytest.raises(MediaRefusedError, match=r"document 1: the image URL redirected more than 3 times; the limit is 3"):
        fetch_url(f"http://media.test:{server}/loop", kind="image", policy=LOOPBACK_OK, where=1)


@pytest.mark.parametrize("path", ["/big-declared", "/big-streamed"])
def test_oversized_body(server: int, path: str) -> None:
    policy = MediaPolicy(allow_domains=ALLOWED, trusted_networks=("127.0.0.1/32",), max_bytes=2**20)
    with pytest.raises(MediaTooLargeError, match=r"document 5: the image is .* but the limit is 1.0 MiB"):
        fetch_url(f"http://media.test:{server}{path}", kind="image", policy=policy, where=5)


def test_slow_body_passes_the_timeout(server: int) -> None:
    policy = MediaPolicy(allow_domains=ALLOWED, trusted_networks=("127.0.0.1/32",), image_timeout_s=0.4)
    start = time.monotonic()
    with pytest.raises(MediaTimeoutError, match=r"document 6: fetching the image from 'media.test' took longer than "
                                                r"the 0.4 s allowed"):
        fetch_url(f"http://media.test:{server}/slow", kind="image", policy=policy, where=6)
    assert time.monotonic() - start < 1.2


def test_decompression_bomb_is_refused_before_decoding(server: int) -> None:
    assert len(BOMB_PNG) < 200
    start = time.monotonic()
    # 400 Mpx is past Pillow's own bomb threshold too, which refuses it first: the same error of ours
    with pytest.raises(MediaTooLargeError, match=r"document 7: the image is 400,000,000 pixels but the "
                                                 r"limit is 50,000,000 pixels"):
        load_image(f"http://media.test:{server}/bomb.png", policy=LOOPBACK_OK, where=7)
    # under Pillow's threshold only our header check stands between the file and the decoder
    with pytest.raises(MediaTooLargeError, match=r"document 7: the image is 8000×8000 = 64,000,000 pixels but the "
                                                 r"limit is 50,000,000 pixels"):
        load_image(png_claiming(8000, 8000), policy=LOOPBACK_OK, where=7)
    assert time.monotonic() - start < 1.0


def test_http_errors_and_dead_hosts_have_clean_messages(server: int) -> None:
    with pytest.raises(MediaFetchError, match=r"document 0: the server at 'media.test' answered HTTP 404") as caught:
        fetch_url(f"http://media.test:{server}/missing.png", kind="image", policy=LOOPBACK_OK, where=0)
    _no_internals(str(caught.value))
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(MediaFetchError, match=r"could not fetch the image from 'media.test': the connection") as caught:
        fetch_url(f"http://media.test:{port}/img.png", kind="image", policy=LOOPBACK_OK, where=0)
    _no_internals(str(caught.value))
    with pytest.raises(MediaFetchError, match=r"the host 'nowhere.test' of the image URL does not resolve") as caught:
        fetch_url("http://nowhere.test/x.png", kind="image", policy=MediaPolicy(allow_domains=frozenset({"*"})))
    _no_internals(str(caught.value))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("ftp://media.test/a.png", r"scheme 'ftp' is not allowed"),
        ("gopher://media.test/", r"scheme 'gopher' is not allowed"),
        ("http://user:pw@media.test/a.png", r"carries credentials"),
        ("file:///etc/passwd", r"local media paths are disabled on this server.*--allowed-local-media-path"),
        ("/etc/passwd", r"local media paths are disabled"),
    ],
)
def test_refused_sources(source: str, message: str) -> None:
    with pytest.raises(MediaRefusedError, match=message):
        read_media(source, kind="image", policy=STRICT, where=0)


def test_local_paths_stay_under_the_allowed_root(tmp_path: Path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    (root / "ok.png").write_bytes(GOOD_PNG)
    (tmp_path / "secret.png").write_bytes(GOOD_PNG)
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to(tmp_path)
    policy = MediaPolicy(allowed_local_root=root)

    assert load_image(str(root / "ok.png"), policy=policy).size == (40, 30)
    assert load_image("ok.png", policy=policy).size == (40, 30)  # relative to the root
    assert load_image(f"file://{root / 'ok.png'}", policy=policy).size == (40, 30)
    for outside in [str(tmp_path / "secret.png"), "../secret.png", str(root / "link.png"), "sub/up/secret.png"]:
        with pytest.raises(MediaRefusedError, match=rf"document 8: the image path '.*' is outside the directory local "
                                                    rf"media may come from \({root}\)") as caught:
            load_image(outside, policy=policy, where=8)
        assert str(tmp_path / "secret.png") not in str(caught.value).replace(outside, "")
    with pytest.raises(MediaError, match=r"document 8: the image file 'nope.png' does not exist"):
        load_image("nope.png", policy=policy, where=8)
    with pytest.raises(MediaError, match=r"is not a regular file"):
        load_image(str(root / "sub"), policy=policy, where=8)


def test_local_file_size_cap(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"\x00" * 4096)
    policy = MediaPolicy(allowed_local_root=tmp_path, max_bytes=1000)
    with pytest.raises(MediaTooLargeError, match=r"document 0: the image is 4,096 bytes but the limit is 1,000 bytes"):
        read_media("big.bin", kind="image", policy=policy, where=0)


def test_data_uris() -> None:
    import base64

    policy = MediaPolicy(max_bytes=1000)
    uri = "data:image/png;base64," + base64.b64encode(GOOD_PNG).decode()
    assert decode_data_uri(uri, kind="image", policy=MediaPolicy()) == GOOD_PNG
    big = "data:image/png;base64," + "A" * 4000
    with pytest.raises(MediaTooLargeError, match=r"document 1: the image is about 3,000 bytes but the limit is 1,000 bytes"):
        read_media(big, kind="image", policy=policy, where=1)
    with pytest.raises(MediaError, match=r"document 1: the image data: URI is not valid base64"):
        read_media("data:image/png;base64,***", kind="image", policy=policy, where=1)
    with pytest.raises(MediaError, match=r"a data: URI of type 'text/html' was given where an image is expected"):
        read_media("data:text/html;base64,PGI+", kind="image", policy=policy, where=1)


def test_too_many_images_and_frames() -> None:
    policy = MediaPolicy()
    policy.check_image_count(64)
    with pytest.raises(MediaTooLargeError, match=r"the request has 65 images but the limit is 64 per request"):
        policy.check_image_count(65)
    frames = [GOOD_PNG] * 65
    with pytest.raises(MediaTooLargeError, match=r"document 9: the video has 65 frames but the limit is 64 frames per video"):
        video_from_frames(frames, policy=policy, where=9)
    with pytest.raises(MediaTooLargeError, match=r"document 9: max_frames 100 was asked for but the limit is 64 frames"):
        policy.check_video_request(1.0, 100, where=9)
    with pytest.raises(MediaTooLargeError, match=r"document 9: fps 30 was asked for but the limit is 2"):
        policy.check_video_request(30.0, 8, where=9)


def test_every_refusal_is_an_input_error() -> None:
    for cls in (MediaError, MediaRefusedError, MediaTooLargeError, MediaTimeoutError, MediaFetchError):
        assert issubclass(cls, InputError)


def test_after_refusals_a_good_request_succeeds(server: int) -> None:
    for bad in (f"http://evil.test:{server}/img.png", f"http://media.test:{server}/bomb.png"):
        with pytest.raises(MediaError):
            load_image(bad, policy=STRICT if "evil" in bad else LOOPBACK_OK)
    assert load_image(f"http://media.test:{server}/img.png", policy=LOOPBACK_OK).size == (40, 30)
    assert load_image(f"http://127.0.0.1:{server}/img.png", policy=MediaPolicy.permissive()).size == (40, 30)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, "ssl.SSLContext"]]:
    """An HTTPS twin of the test server, with a certificate for media.test only; and a client context
    that trusts that certificate."""
    import datetime
    import ssl

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "media.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("media.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.socket = server_context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    client_context = ssl.create_default_context(cafile=str(folder / "cert.pem"))
    yield httpd.server_address[1], client_context
    httpd.shutdown()
    httpd.server_close()


def test_https_checks_the_certificate_against_the_name(tls_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from rerankd.media import _http

    port, trusting = tls_server
    # with the system's roots the self-signed certificate does not verify
    with pytest.raises(MediaFetchError, match=r"document 0: could not fetch the image from 'media.test': its TLS "
                                              r"certificate did not verify") as caught:
        fetch_url(f"https://media.test:{port}/img.png", kind="image", policy=LOOPBACK_OK, where=0)
    _no_internals(str(caught.value))
    monkeypatch.setattr(_http, "SSL_CONTEXT", trusting)
    # connected to 127.0.0.1, yet SNI and the certificate check use the name in the URL
    assert fetch_url(f"https://media.test:{port}/img.png", kind="image", policy=LOOPBACK_OK) == GOOD_PNG
    # the same server by IP: the certificate does not name 127.0.0.1
    with pytest.raises(MediaFetchError, match="its TLS certificate did not verify"):
        fetch_url(f"https://127.0.0.1:{port}/img.png", kind="image", policy=LOOPBACK_OK)


def test_urls_are_sent_as_ascii(server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real_get = __import__("rerankd.media._http", fromlist=["get"]).get

    def spy(url, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(url)
        return real_get(url, *args, **kwargs)

    monkeypatch.setattr("rerankd.media._http.get", spy)
    policy = MediaPolicy(allow_domains=frozenset({"bücher.test", "media.test"}), trusted_networks=("127.0.0.1/32",))
    with pytest.raises(MediaFetchError, match="answered HTTP 404"):
        fetch_url(f"http://media.test:{server}/bild ä.png?q=ü", kind="image", policy=policy)
    assert seen[-1] == f"http://media.test:{server}/bild%20%C3%A4.png?q=%C3%BC"
    assert policy.domain_allowed("xn--bcher-kva.test")
