"""rerankd on Ray: Serve replicas for online reranking, Ray Data actors for scoring whole runs.

Needs the ``rerankd[ray]`` extra; ``import rerankd`` never imports Ray, this package does.

Example:
    >>> from ray import serve
    >>> from rerankd.ray import build_app
    >>> serve.run(build_app(replicas=2, replica_cpus=1), route_prefix="/")   # doctest: +SKIP
"""

from __future__ import annotations

from rerankd._optional import require

require("ray")

from rerankd.ray.cluster import connect  # noqa: E402
from rerankd.ray.data import RayDataEngine  # noqa: E402
from rerankd.ray.serving import REPLICA_HEADER, build_app  # noqa: E402

__all__ = ["REPLICA_HEADER", "RayDataEngine", "build_app", "connect"]
