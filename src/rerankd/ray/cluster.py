"""Joining a Ray cluster, or starting a local one, with errors a user can act on.

``RAY_ADDRESS`` (or ``--ray-address``) names an existing cluster (``host:port`` of its head, or
``ray://host:10001`` for Ray Client); without one a local Ray is started on this machine, loopback
only and without the dashboard. An address that does not answer fails in seconds, naming it, rather
than after Ray's own long connection retries.

Example:
    >>> ray = connect()                      # a local Ray  # doctest: +SKIP
    >>> ray = connect("10.0.0.5:6379")       # a cluster's head  # doctest: +SKIP
"""

from __future__ import annotations

import os
import socket
from typing import Any

from rerankd._optional import require
from rerankd.errors import InputError

#: How long the head's port may take to accept a TCP connection before the address counts as unreachable.
CONNECT_TIMEOUT_S = 5.0


def connect(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """The ``ray`` module, initialised: on ``address`` (default ``$RAY_ADDRESS``), else a local Ray."""
    ray = require("ray")
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "auto" and address != "local":
        check_reachable(address)
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if not address or address == "local":
        # A fresh local Ray: loopback only, no dashboard (nothing listens beyond this machine).
        kwargs.update(address="local", include_dashboard=False, num_cpus=num_cpus,
                      _node_ip_address="127.0.0.1")
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise InputError(f"could not join the Ray cluster at {address!r} ({exc}); check RAY_ADDRESS / --ray-address "
                         "and that `ray start --head` runs there") from exc
    return ray


def check_reachable(address: str) -> None:
    """Raise :class:`InputError` unless ``address``'s head port accepts a TCP connection."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise InputError(f"the Ray cluster at {address!r} is unreachable ({host}:{port}: {exc.strerror or exc}); "
                         "start it with `ray start --head`, or unset RAY_ADDRESS to run on a local Ray") from exc


def _host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``ray://host:port`` → (host, port); Ray Client's default port is 10001."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep:
        host, port = rest, "10001" if address.startswith("ray://") else "6379"
    if not port.isdigit() or not host:
        raise InputError(f"RAY_ADDRESS {address!r} is not host:port (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001)")
    return host.strip("[]"), int(port)
