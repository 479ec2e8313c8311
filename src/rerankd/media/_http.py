"""One HTTP GET over a connection pinned to addresses already checked, under one deadline and a byte cap.

Why httpcore with a custom network backend: the URL keeps its host name, so httpcore sends
``Host: name``, uses the name for TLS SNI and verifies the certificate against the name, while the
backend below is the only place a socket is opened, and it opens it to the checked IP address — the
name is never handed to a resolver again (no DNS rebinding window). urllib3/http.client can do the
same only by rewriting the URL to the IP and patching SNI and hostname checks by hand; httpx adds a
client layer that would follow redirects and read proxy settings from the environment, both of which
must be off here. httpcore follows no redirects, reads no environment and does not decompress.

The deadline covers everything: each socket read and write gets at most the time left, so a server
trickling one byte a second cannot stretch a fetch past it.
"""

from __future__ import annotations

import ssl
import time
import typing
from dataclasses import dataclass

import httpcore

_USER_AGENT = "rerankd-media-fetch/1"

#: The TLS context (None: httpcore's default, certificates checked against certifi's roots and the
#: URL's host name). Tests set one that trusts their own certificate authority.
SSL_CONTEXT: ssl.SSLContext | None = None


class Timeout(Exception):
    """The deadline passed."""


class TooLarge(Exception):
    def __init__(self, size: int | None) -> None:
        super().__init__("too large")
        self.size = size


class Failed(Exception):
    """The fetch failed; ``reason`` is a short message of ours, safe to show a client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Answer:
    status: int
    location: str | None
    body: bytes


def _left(deadline: float, timeout: float | None) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("deadline passed")
    return left if timeout is None else min(left, timeout)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every operation ends by the fetch's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(self._deadline, timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(self._deadline, timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, _left(self._deadline, timeout))
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects the one expected host to its checked addresses, tried in order; nothing else."""

    def __init__(self, host: str, addresses: list[str], deadline: float) -> None:
        self._host = host
        self._addresses = addresses
        self._deadline = deadline
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: typing.Iterable[typing.Any] | None = None) -> httpcore.NetworkStream:
        if host.strip("[]").lower() != self._host:
            raise httpcore.ConnectError("connection to an unexpected host")
        failure: Exception = httpcore.ConnectError("no address")
        for address in self._addresses:
            try:
                stream = self._sockets.connect_tcp(address, port, timeout=_left(self._deadline, timeout),
                                                   local_address=local_address, socket_options=socket_options)
            except httpcore.ConnectTimeout:
                raise
            except httpcore.ConnectError as exc:
                failure = exc
                continue
            return _DeadlineStream(stream, self._deadline)
        raise failure

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: typing.Iterable[typing.Any] | None = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for media")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _reason(exc: BaseException) -> str:
    chain: list[BaseException] = []
    while exc is not None and len(chain) < 8:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain):
        return "its TLS certificate did not verify"
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return "the TLS handshake failed"
    if any(isinstance(e, (httpcore.ProtocolError, httpcore.UnsupportedProtocol)) for e in chain):
        return "the server did not answer in valid HTTP"
    if any(isinstance(e, ValueError) and not isinstance(e, ssl.SSLError) for e in chain):
        return "the URL could not be sent as an HTTP request"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "the connection was refused"
    if any(isinstance(e, httpcore.ConnectError) for e in chain):
        return "the connection could not be made"
    return "the connection failed"


def get(url: str, host: str, addresses: list[str], *, deadline: float, max_bytes: int, accept: str) -> Answer:
    """GET ``url`` through ``addresses`` only. Redirects come back as answers; the caller checks them."""
    left = max(deadline - time.monotonic(), 0.0)
    timeouts = {"connect": left, "read": left, "write": left, "pool": left}
    headers = [
        (b"User-Agent", _USER_AGENT.encode()),
        (b"Accept", accept.encode("ascii")),
        # identity only: a compressed body would need decompressing, i.e. a second size to police
        (b"Accept-Encoding", b"identity"),
        (b"Connection", b"close"),
    ]
    backend = _PinnedBackend(host, addresses, deadline)
    try:
        with httpcore.ConnectionPool(ssl_context=SSL_CONTEXT, network_backend=backend, max_connections=1,
                                     retries=0) as pool:
            with pool.stream("GET", url, headers=headers, extensions={"timeout": timeouts}) as response:
                status = response.status
                fields = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
                if status != 200:
                    return Answer(status=status, location=fields.get("location"), body=b"")
                if fields.get("content-encoding", "identity").lower() not in ("identity", ""):
                    raise Failed("the server sent a compressed body although none was asked for")
                declared = fields.get("content-length")
                if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
                    raise TooLarge(int(declared))
                body = bytearray()
                for chunk in response.iter_stream():
                    body += chunk
                    if len(body) > max_bytes:
                        raise TooLarge(None)
                    if time.monotonic() > deadline:
                        raise Timeout()
                return Answer(status=status, location=None, body=bytes(body))
    except httpcore.TimeoutException:
        raise Timeout() from None
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, httpcore.ProxyError,
            ssl.SSLError, OSError, ValueError) as exc:
        if isinstance(exc, TimeoutError):
            raise Timeout() from None
        raise Failed(_reason(exc)) from None
