"""rerankd's FastAPI app as a Ray Serve deployment: replicas, autoscaling, one app for every dialect.

Each replica loads the models, sets torch's threads to the CPUs Ray gave it, and serves the very app
:func:`rerankd.server.app.create_app` makes — routes, limits, auth, metrics, the token-budget batcher
and, when configured, the shared Redis cache. Ray Serve only routes requests between replicas (its
``@serve.batch`` counts requests, not tokens, so batching stays rerankd's). Every response names its
replica in the ``x-rerankd-replica`` header.

Example (a Serve app of your own):
    >>> from ray import serve
    >>> from rerankd.ray import build_app
    >>> serve.run(build_app(["bge=BAAI/bge-reranker-base"], replicas=2, replica_cpus=4), route_prefix="/")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from rerankd._optional import require
from rerankd.errors import InputError

REPLICA_HEADER = b"x-rerankd-replica"
#: Requests a replica takes at once: enough for its batcher to merge many into one forward pass
#: (rerankd's own queue limit, --max-queue, answers 429 beyond what it can hold).
DEFAULT_MAX_ONGOING = 64
#: Default target of ongoing requests per replica for --autoscale.
DEFAULT_TARGET_ONGOING = 8


def parse_autoscale(spec: str) -> tuple[int, int]:
    """``"MIN,MAX"`` → (MIN, MAX), checked.

    Example:
        >>> parse_autoscale("1,4")
        (1, 4)
    """
    low, sep, high = spec.partition(",")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise InputError(f"--autoscale {spec!r} is not MIN,MAX (e.g. 1,4)")
    bounds = int(low), int(high)
    if bounds[1] < 1 or bounds[0] > bounds[1]:
        raise InputError(f"--autoscale {spec!r}: need 0 <= MIN <= MAX and MAX >= 1")
    return bounds


class ReplicaHeader:
    """Pure ASGI middleware adding ``x-rerankd-replica: <replica id>`` to every response."""

    def __init__(self, app: Any, replica: str) -> None:
        self.app = app
        self.replica = replica.encode("latin-1")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((REPLICA_HEADER, self.replica))
            await send(message)

        await self.app(scope, receive, send_named)


class RerankdReplica:
    """One Serve replica: the models, loaded once, and rerankd's app over them."""

    def __init__(self, models: list[str | None], load_options: dict[str, Any], settings: Any, threads: int) -> None:
        # torch threads = this replica's CPUs; set before torch makes its pool (rerankd keeps an explicit cap).
        os.environ["OMP_NUM_THREADS"] = str(threads)
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
        from rerankd.commands.serve import load_engines

        self.engines = load_engines([m for m in models if m] or None, load_options)
        self.settings = settings

    def __serve_build_asgi_app__(self) -> Any:
        from ray import serve

        from rerankd.server.app import create_app

        app = create_app(self.engines, self.settings)
        app.add_middleware(ReplicaHeader, replica=serve.get_replica_context().replica_id.unique_id)
        return app


def build_app(
    models: Sequence[str | None] | None = None,
    settings: Any = None,
    *,
    load_options: dict[str, Any] | None = None,
    replicas: int = 1,
    autoscale: tuple[int, int] | None = None,
    target_ongoing_requests: float = DEFAULT_TARGET_ONGOING,
    replica_cpus: float = 1.0,
    replica_gpus: float = 0.0,
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING,
    name: str = "rerankd",
) -> Any:
    """A bound Serve application serving ``models`` (``[NAME=]MODEL`` specs; none: the bundled model).

    ``settings`` is a :class:`~rerankd.server.settings.ServerSettings` (its host and port are Serve's
    to choose, see ``serve.start``); ``load_options`` are :meth:`Reranker.from_pretrained` arguments
    shared by every model (dtype, backend, max_length, ...). ``autoscale=(MIN, MAX)`` lets Serve add
    and remove replicas to keep about ``target_ongoing_requests`` requests on each; otherwise
    ``replicas`` replicas run.
    """
    serve = require("ray.serve")
    from rerankd.server.settings import ServerSettings

    if autoscale is None and replicas < 1:
        raise InputError(f"--replicas must be at least 1, got {replicas}")
    if replica_cpus <= 0:
        raise InputError(f"--replica-cpus must be more than 0, got {replica_cpus}")
    if replica_gpus < 0:
        raise InputError(f"--replica-gpus must be 0 or more, got {replica_gpus}")
    if target_ongoing_requests <= 0:
        raise InputError(f"--target-ongoing-requests must be more than 0, got {target_ongoing_requests}")
    known = load_option_names()
    unknown = set(load_options or {}) - known
    if unknown:
        raise InputError(f"unknown load option {sorted(unknown)[0]!r}; use one of {', '.join(sorted(known))}")
    scaling: dict[str, Any]
    if autoscale is not None:
        scaling = {"autoscaling_config": {"min_replicas": autoscale[0], "max_replicas": autoscale[1],
                                          "initial_replicas": max(1, autoscale[0]),
                                          "target_ongoing_requests": target_ongoing_requests}}
    else:
        scaling = {"num_replicas": replicas}
    actor_options: dict[str, Any] = {"num_cpus": replica_cpus}
    if replica_gpus:
        actor_options["num_gpus"] = replica_gpus
    deployment = serve.deployment(
        serve.ingress()(RerankdReplica), name=name, ray_actor_options=actor_options,
        max_ongoing_requests=max_ongoing_requests, health_check_period_s=2, **scaling,
    )
    return deployment.bind(list(models or [None]), dict(load_options or {}), settings or ServerSettings(),
                           max(1, int(replica_cpus)))


def load_option_names() -> set[str]:
    """The keyword arguments :meth:`Reranker.from_pretrained` takes (the model aside)."""
    import inspect

    from rerankd.engine import Reranker

    return set(inspect.signature(Reranker.from_pretrained).parameters) - {"cls", "model"}
