"""Where media may come from: the policy, and fetching that keeps to it.

A server that downloads URLs named by its clients can be pointed at its own network (SSRF): the cloud
metadata address, an admin port on loopback, a database on 10.x. So every fetch here is checked the
same way, hop by hop:

1. the scheme is ``http``, ``https`` or ``data:`` (local paths only under an allowed directory);
2. the host is an allowed domain, or a subdomain of one;
3. the host is resolved here, and every address it resolves to must be public (not private, loopback,
   link-local, multicast, reserved or unspecified, for IPv4 and IPv6 alike, IPv4 hidden inside IPv6
   included);
4. the connection goes to the address that was checked — the name is never resolved a second time,
   so a DNS answer that changes between check and connect (DNS rebinding) cannot slip through;
5. redirects are never followed blindly: each target goes through 1–4 again, at most
   ``max_redirects`` times;
6. one deadline covers the whole fetch (connect, TLS, headers, body, redirects), and the body is
   counted as it streams and dropped when it passes the byte cap.

Every refusal raises a :class:`~rerankd.errors.MediaError` subclass whose message names the query or
document (``where``) and the limit; network failures are reported in words of our own, never with
the text of an internal exception.

Example:
    >>> policy = MediaPolicy(allow_domains=frozenset({"example.com"}))
    >>> policy.domain_allowed("cdn.example.com"), policy.domain_allowed("example.com.evil.net")
    (True, False)
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import ipaddress
import os
import re
import socket
import stat
import time
import urllib.parse
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Union

from rerankd._optional import require
from rerankd.errors import MediaError, MediaFetchError, MediaRefusedError, MediaTimeoutError, MediaTooLargeError

#: What is being fetched; it picks the timeout, the byte cap and the wording of messages.
MediaKind = Literal["image", "video"]

#: Which query or document a medium belongs to: an int is a document index, a string is used as is
#: (``"the query"``, ``"document 3, frame 7"``), None leaves the message without a subject.
Where = Union[int, str, None]

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# 64:ff9b::/96 maps IPv4 through NAT64 gateways: 64:ff9b::7f00:1 can reach 127.0.0.1 behind one.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# getaddrinfo has no timeout of its own; a few worker threads let a fetch give up on a slow resolver.
_RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="rerankd-dns")


def subject(where: Where) -> str:
    """The prefix a message about this medium starts with: ``"document 3: "``, ``"the query: "`` or ``""``.

    Example:
        >>> subject(3), subject("the query"), subject(None)
        ('document 3: ', 'the query: ', '')
    """
    if where is None:
        return ""
    if isinstance(where, int):
        return f"document {where}: "
    return f"{where}: "


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n:,} bytes"


def _host_key(host: str) -> str:
    """A host as it is compared: lower case, no trailing dot, IDNA (punycode) for non-ASCII names."""
    host = host.strip().rstrip(".").lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


@dataclass(frozen=True)
class MediaPolicy:
    """Where images and videos may come from, and how big they may be.

    The defaults are the server's safe defaults: no remote URLs, no local paths, only inline media
    (``data:`` URIs, base64, bytes). :meth:`permissive` is for the Python API, where the caller is
    the one whose machine is at stake.

    Attributes:
        allow_domains: hosts remote media may come from; a name also allows its subdomains;
            ``"*"`` allows every host. Empty: remote URLs are off (server flag ``--allow-media-domains``).
        allowed_local_root: the directory local paths must lie in, compared after resolving symlinks;
            relative paths are taken relative to it. None: local paths are off (server flag
            ``--allowed-local-media-path``).
        allow_any_local_path: local paths anywhere, relative to the working directory (Python API).
        allow_private_addresses: let allowed hosts resolve to private, loopback or link-local
            addresses. Off in the server: that is exactly what an SSRF attack needs.
        trusted_networks: CIDR blocks exempt from the public-address rule, e.g. an internal media
            server the operator vouches for (``("10.1.2.0/24",)``); the domain must still be allowed.
        image_timeout_s: the whole fetch of one image (or frame), redirects included.
        video_timeout_s: the whole fetch of one video file.
        max_bytes: bytes of one image or frame, however it arrives (URL, data URI, bytes, file).
        max_video_bytes: bytes of one video file.
        max_pixels: width × height of one image, frame or video frame, checked from the header
            before any pixel is decoded (decompression bombs).
        max_images_per_request: images in one request, query and documents together.
        max_frames: frames one video may be sampled to, and entries a frame-list video may have.
        max_fps: the highest sampling rate a request may ask for.
        max_video_seconds: the longest video file accepted (it is decoded from its start).
        max_redirects: redirects followed per fetch, each re-checked.
    """

    allow_domains: frozenset[str] = frozenset()
    allowed_local_root: Path | None = None
    allow_any_local_path: bool = False
    allow_private_addresses: bool = False
    trusted_networks: tuple[str, ...] = ()
    image_timeout_s: float = 5.0
    video_timeout_s: float = 30.0
    max_bytes: int = 20 * 2**20
    max_video_bytes: int = 256 * 2**20
    max_pixels: int = 50_000_000
    max_images_per_request: int = 64
    max_frames: int = 64
    max_fps: float = 2.0
    max_video_seconds: float = 600.0
    max_redirects: int = 3
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        domains = self.allow_domains
        if isinstance(domains, str):  # a flag's value: "a.com,b.org" or "a.com b.org"
            domains = re.split(r"[,\s]+", domains)
        object.__setattr__(self, "allow_domains", frozenset(_host_key(d) for d in domains if d.strip()))
        if self.allowed_local_root is not None:
            object.__setattr__(self, "allowed_local_root", Path(self.allowed_local_root))
        try:
            networks = tuple(ipaddress.ip_network(n, strict=False) for n in self.trusted_networks)
        except ValueError as exc:
            raise ValueError(f"trusted_networks must be CIDR blocks such as '10.1.2.0/24': {exc}") from None
        object.__setattr__(self, "_networks", networks)
        for name in ("image_timeout_s", "video_timeout_s", "max_fps", "max_video_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"MediaPolicy.{name} must be positive, got {getattr(self, name)}")
        for name in ("max_bytes", "max_video_bytes", "max_pixels", "max_images_per_request", "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"MediaPolicy.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_redirects < 0:
            raise ValueError(f"MediaPolicy.max_redirects must be 0 or more, got {self.max_redirects}")

    @classmethod
    def permissive(cls, **overrides: object) -> MediaPolicy:
        """The Python API's policy: any host (private ones too), any local path, generous caps.

        The pixel cap stays (a decompression bomb hurts a laptop too), at Pillow's own error threshold.

        Example:
            >>> MediaPolicy.permissive().domain_allowed("localhost")
            True
        """
        base = cls(
            allow_domains=frozenset({"*"}),
            allow_any_local_path=True,
            allow_private_addresses=True,
            image_timeout_s=60.0,
            video_timeout_s=600.0,
            max_bytes=2**30,
            max_video_bytes=16 * 2**30,
            max_pixels=2 * 89_478_485,
            max_images_per_request=1_000_000,
            max_frames=768,
            max_fps=1000.0,
            max_video_seconds=10.0**9,
        )
        return replace(base, **overrides) if overrides else base  # type: ignore[arg-type]

    @property
    def remote_enabled(self) -> bool:
        return bool(self.allow_domains)

    def domain_allowed(self, host: str) -> bool:
        """Whether ``host`` is an allowed domain or a subdomain of one (IP literals match only exactly)."""
        key = _host_key(host)
        if "*" in self.allow_domains or key in self.allow_domains:
            return True
        if _is_ip_literal(key):
            return False
        return any(key.endswith("." + domain) for domain in self.allow_domains if not _is_ip_literal(domain))

    def address_allowed(self, ip: IPAddress) -> bool:
        """Whether a connection to ``ip`` is allowed: public, trusted, or private addresses allowed."""
        if self.allow_private_addresses or is_public_address(ip):
            return True
        return any(ip.version == net.version and ip in net for net in self._networks)

    def check_image_count(self, count: int, where: Where = None) -> None:
        """Refuse a request with more than ``max_images_per_request`` images.

        Example:
            >>> MediaPolicy(max_images_per_request=2).check_image_count(3)
            Traceback (most recent call last):
            ...
            rerankd.errors.MediaTooLargeError: the request has 3 images but the limit is 2 per request
        """
        if count > self.max_images_per_request:
            raise MediaTooLargeError(
                f"{subject(where)}the request has {count} images but the limit is "
                f"{self.max_images_per_request} per request"
            )

    def check_video_request(self, fps: float, max_frames: int, where: Where = None) -> None:
        """Refuse sampling settings over the caps (``fps`` > ``max_fps``, ``max_frames`` > ``max_frames``)."""
        if not fps > 0:
            raise MediaError(f"{subject(where)}fps must be positive, got {fps}")
        if fps > self.max_fps:
            raise MediaTooLargeError(f"{subject(where)}fps {fps:g} was asked for but the limit is {self.max_fps:g}")
        if max_frames < 2:
            raise MediaError(f"{subject(where)}max_frames must be at least 2, got {max_frames}")
        if max_frames > self.max_frames:
            raise MediaTooLargeError(
                f"{subject(where)}max_frames {max_frames} was asked for but the limit is {self.max_frames} frames"
            )

    def check_frame_count(self, count: int, where: Where = None) -> None:
        """Refuse a frame-list video with more than ``max_frames`` frames."""
        if count > self.max_frames:
            raise MediaTooLargeError(
                f"{subject(where)}the video has {count} frames but the limit is {self.max_frames} frames per video"
            )

    def timeout_s(self, kind: MediaKind) -> float:
        return self.image_timeout_s if kind == "image" else self.video_timeout_s

    def byte_cap(self, kind: MediaKind) -> int:
        return self.max_bytes if kind == "image" else self.max_video_bytes


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_public_address(ip: IPAddress) -> bool:
    """Whether ``ip`` is a globally reachable unicast address, with IPv4 embedded in IPv6 checked too.

    Example:
        >>> [is_public_address(ipaddress.ip_address(a)) for a in ("8.8.8.8", "10.0.0.1", "::ffff:127.0.0.1")]
        [True, False, False]
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour]
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(v4 is not None and not is_public_address(v4) for v4 in embedded):
            return False
    return bool(
        ip.is_global
        and not (ip.is_multicast or ip.is_private or ip.is_loopback or ip.is_link_local)
        and not (ip.is_reserved or ip.is_unspecified)
    )


# ---------------------------------------------------------------------------------------------------
# Sources: bytes, local paths, data: URIs, URLs


def read_media(source: str | os.PathLike[str] | bytes | bytearray | memoryview, *, kind: MediaKind,
               policy: MediaPolicy, where: Where = None) -> bytes | Path:
    """The bytes of an image or video, or the checked path of a local file (decoders read it lazily).

    ``source`` is bytes, a local path (``str``, ``Path`` or ``file://`` URI), a ``data:`` URI or an
    ``http(s)`` URL. Other schemes are refused.

    Raises:
        MediaRefusedError: the policy forbids the source.
        MediaTooLargeError: over ``max_bytes`` / ``max_video_bytes``.
        MediaTimeoutError: the fetch passed its timeout.
        MediaFetchError: the remote server did not hand the media over.
        MediaError: no such file, malformed data URI.

    Example:
        >>> read_media("data:image/png;base64,iVBORw0KGgo=", kind="image", policy=MediaPolicy())
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_size(len(data), kind, policy, where)
        return data
    if isinstance(source, os.PathLike):
        return resolve_local_path(source, kind=kind, policy=policy, where=where)
    if not isinstance(source, str):
        raise MediaError(f"{subject(where)}{_a(kind)} source must be a path, URL, data: URI or bytes, "
                         f"not {type(source).__name__}")
    text = source.strip()
    if text[:5].lower() == "data:":
        return decode_data_uri(text, kind=kind, policy=policy, where=where)
    match = _SCHEME.match(text)
    if match is None:
        return resolve_local_path(text, kind=kind, policy=policy, where=where)
    scheme = match.group(1).lower()
    if scheme in ("http", "https"):
        return fetch_url(text, kind=kind, policy=policy, where=where)
    if scheme == "file":
        parsed = urllib.parse.urlsplit(text)
        if parsed.netloc not in ("", "localhost"):
            raise MediaRefusedError(f"{subject(where)}file:// URIs must name a local file, not host {parsed.netloc!r}")
        return resolve_local_path(urllib.parse.unquote(parsed.path), kind=kind, policy=policy, where=where)
    raise MediaRefusedError(
        f"{subject(where)}the {kind} URL scheme {scheme!r} is not allowed; use http(s), a data: URI, "
        "inline base64 or (where enabled) a local path"
    )


def _check_size(size: int, kind: MediaKind, policy: MediaPolicy, where: Where) -> None:
    cap = policy.byte_cap(kind)
    if size > cap:
        raise MediaTooLargeError(f"{subject(where)}the {kind} is {_mb(size)} but the limit is {_mb(cap)}")


def resolve_local_path(path: str | os.PathLike[str], *, kind: MediaKind, policy: MediaPolicy,
                       where: Where = None) -> Path:
    """The resolved path of a local media file the policy allows, with its size checked.

    The path is compared with ``allowed_local_root`` after both are resolved (``..`` and symlinks),
    so neither ``root/../etc/passwd`` nor a symlink inside the root pointing out of it gets through.
    Only regular files are read (a FIFO or device would hang or never end).

    Example:
        >>> resolve_local_path("/etc/hostname", kind="image", policy=MediaPolicy())
        Traceback (most recent call last):
        ...
        rerankd.errors.MediaRefusedError: local media paths are disabled on this server; start it with --allowed-local-media-path DIR to allow a directory
    """
    raw = Path(path)
    if policy.allow_any_local_path:
        resolved = raw.resolve()
    elif policy.allowed_local_root is None:
        raise MediaRefusedError(
            f"{subject(where)}local media paths are disabled on this server; start it with "
            "--allowed-local-media-path DIR to allow a directory"
        )
    else:
        root = policy.allowed_local_root.resolve()
        resolved = (raw if raw.is_absolute() else root / raw).resolve()
        if resolved != root and root not in resolved.parents:
            # The resolved target is not named: it may reveal the layout outside the root.
            raise MediaRefusedError(
                f"{subject(where)}the {kind} path {str(path)!r} is outside the directory local media may come "
                f"from ({root}); symlinks are followed before this check"
            )
    try:
        info = resolved.stat()
    except FileNotFoundError:
        raise MediaError(f"{subject(where)}the {kind} file {str(path)!r} does not exist") from None
    except OSError:
        raise MediaError(f"{subject(where)}the {kind} file {str(path)!r} cannot be read") from None
    if not stat.S_ISREG(info.st_mode):
        raise MediaError(f"{subject(where)}the {kind} path {str(path)!r} is not a regular file")
    if not os.access(resolved, os.R_OK):
        raise MediaError(f"{subject(where)}the {kind} file {str(path)!r} cannot be read")
    _check_size(info.st_size, kind, policy, where)
    return resolved


def decode_data_uri(uri: str, *, kind: MediaKind, policy: MediaPolicy, where: Where = None) -> bytes:
    """The bytes of a ``data:`` URI (base64 or percent-encoded), size checked before decoding.

    The media type must be ``image/*`` for images and ``video/*`` for videos (or be absent, or
    ``application/octet-stream``): the decoder finds the real format from the bytes.
    """
    head, comma, payload = uri[5:].partition(",")
    if not comma:
        raise MediaError(f"{subject(where)}the {kind} data: URI has no ',' before its data")
    params = [p.strip().lower() for p in head.split(";")]
    media_type = params[0]
    if media_type and media_type != "application/octet-stream" and not media_type.startswith(kind + "/"):
        raise MediaError(f"{subject(where)}a data: URI of type {media_type!r} was given where {_a(kind)} is expected")
    cap = policy.byte_cap(kind)
    if "base64" in params[1:]:
        payload = re.sub(r"\s+", "", urllib.parse.unquote(payload) if "%" in payload else payload)
        if len(payload) // 4 * 3 > cap:
            raise MediaTooLargeError(
                f"{subject(where)}the {kind} is about {_mb(len(payload) // 4 * 3)} but the limit is {_mb(cap)}"
            )
        try:
            data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise MediaError(f"{subject(where)}the {kind} data: URI is not valid base64") from None
    else:
        if len(payload) > 3 * cap:
            raise MediaTooLargeError(f"{subject(where)}the {kind} is over the limit of {_mb(cap)}")
        data = urllib.parse.unquote_to_bytes(payload)
    _check_size(len(data), kind, policy, where)
    return data


def decode_base64(text: str, *, kind: MediaKind, policy: MediaPolicy, where: Where = None) -> bytes:
    """Bytes of bare base64 (Jina's ``{"image": "<base64>"}``), size checked before decoding.

    Example:
        >>> decode_base64("iVBORw0KGgo=", kind="image", policy=MediaPolicy())
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    return decode_data_uri("data:;base64," + text, kind=kind, policy=policy, where=where)


# ---------------------------------------------------------------------------------------------------
# Remote URLs


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str
    port: int


def _what(kind: MediaKind, hop: int) -> str:
    return f"the {kind} URL" if hop == 0 else f"the {kind} URL's redirect target"


def _check_url(url: str, policy: MediaPolicy, kind: MediaKind, where: Where, hop: int) -> _Target:
    what = _what(kind, hop)
    try:
        parsed = urllib.parse.urlsplit(url)
        port = parsed.port
    except ValueError:
        raise MediaError(f"{subject(where)}{what} is not a valid URL") from None
    scheme = parsed.scheme.lower()
    if scheme not in ("http", "https"):
        raise MediaRefusedError(f"{subject(where)}{what} uses scheme {scheme!r}; only http and https are fetched")
    if parsed.username is not None or parsed.password is not None:
        raise MediaRefusedError(f"{subject(where)}{what} carries credentials; they are not sent")
    host = _host_key(parsed.hostname or "")
    if not host:
        raise MediaError(f"{subject(where)}{what} has no host")
    if not policy.remote_enabled:
        raise MediaRefusedError(
            f"{subject(where)}remote media URLs are disabled on this server; start it with "
            "--allow-media-domains DOMAIN[,DOMAIN...] to allow some, or send the media inline as a data: URI"
        )
    if not policy.domain_allowed(host):
        allowed = ", ".join(sorted(policy.allow_domains))
        raise MediaRefusedError(
            f"{subject(where)}{what} is on host {host!r}, which is not an allowed media domain (allowed: {allowed})"
        )
    # httpcore sends the URL as ASCII: the host as punycode, anything else non-ASCII percent-encoded
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    safe = "/%:@!$&'()*+,;=-._~?"
    ascii_url = urllib.parse.urlunsplit((scheme, netloc, urllib.parse.quote(parsed.path or "/", safe=safe),
                                         urllib.parse.quote(parsed.query, safe=safe), ""))
    return _Target(url=ascii_url, scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80))


def _resolve(target: _Target, policy: MediaPolicy, kind: MediaKind, where: Where, deadline: float,
             hop: int) -> list[str]:
    """The addresses to connect to: every one the host resolves to, all of them checked."""
    what = _what(kind, hop)
    if _is_ip_literal(target.host):
        addresses = [ipaddress.ip_address(target.host)]
    else:
        future = _RESOLVER.submit(socket.getaddrinfo, target.host, target.port, 0, socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=max(deadline - time.monotonic(), 0.001))
        except concurrent.futures.TimeoutError:
            raise MediaTimeoutError(
                f"{subject(where)}resolving the host {target.host!r} of {what} took longer than the "
                f"{policy.timeout_s(kind):g} s allowed for {_a(kind)}"
            ) from None
        except (OSError, UnicodeError):
            raise MediaFetchError(f"{subject(where)}the host {target.host!r} of {what} does not resolve") from None
        addresses = []
        for info in infos:
            ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise MediaFetchError(f"{subject(where)}the host {target.host!r} of {what} does not resolve")
    # One bad address refuses the host: a name that also points inside the network is not trusted.
    for ip in addresses:
        if not policy.address_allowed(ip):
            how = "which is" if _is_ip_literal(target.host) else f"which resolves to {ip},"
            raise MediaRefusedError(
                f"{subject(where)}{what} has host {target.host!r}, {how} not a public address "
                "(private, loopback, link-local, multicast and reserved addresses are refused)"
            )
    return [str(ip) for ip in addresses]


def fetch_url(url: str, *, kind: MediaKind, policy: MediaPolicy, where: Where = None) -> bytes:
    """Download ``url`` under ``policy``: checked hop by hop, pinned to checked addresses, capped, timed.

    Raises:
        MediaRefusedError: scheme, domain, address or redirect not allowed.
        MediaTooLargeError: the body is over the byte cap (by Content-Length or as it streams).
        MediaTimeoutError: the whole fetch took longer than the kind's timeout.
        MediaFetchError: connection failed, TLS failed, or an HTTP status other than 200.
    """
    require("httpcore")
    from rerankd.media import _http

    timeout = policy.timeout_s(kind)
    cap = policy.byte_cap(kind)
    deadline = time.monotonic() + timeout
    for hop in range(policy.max_redirects + 1):
        target = _check_url(url, policy, kind, where, hop)
        addresses = _resolve(target, policy, kind, where, deadline, hop)
        try:
            answer = _http.get(target.url, target.host, addresses, deadline=deadline, max_bytes=cap, accept=f"{kind}/*")
        except _http.TooLarge as exc:
            size = f"{_mb(exc.size)}" if exc.size else f"over {_mb(cap)}"
            raise MediaTooLargeError(f"{subject(where)}the {kind} is {size} but the limit is {_mb(cap)}") from None
        except _http.Timeout:
            raise MediaTimeoutError(
                f"{subject(where)}fetching the {kind} from {target.host!r} took longer than the "
                f"{timeout:g} s allowed for {_a(kind)}"
            ) from None
        except _http.Failed as exc:
            raise MediaFetchError(f"{subject(where)}could not fetch the {kind} from {target.host!r}: {exc.reason}") from None
        if answer.status in _REDIRECTS and answer.location:
            url = urllib.parse.urljoin(target.url, answer.location)
            continue
        if answer.status != 200:
            raise MediaFetchError(
                f"{subject(where)}the server at {target.host!r} answered HTTP {answer.status} for the {kind} URL"
            )
        return answer.body
    raise MediaRefusedError(
        f"{subject(where)}the {kind} URL redirected more than {policy.max_redirects} times; the limit is "
        f"{policy.max_redirects} redirects"
    )
