"""rerankd on Ray: Serve replicas for online reranking, Ray Data actors for scoring whole runs.

Needs the ``rerankd[ray]`` extra; ``import rerankd`` never imports Ray. The names below are loaded
on first use, and Ray itself only when a cluster is joined or a deployment is built, so a missing
extra fails there with the pip command.

Example:
    >>> from ray import serve
    >>> from rerankd.ray import build_app
    >>> serve.run(build_app(replicas=2, replica_cpus=1), route_prefix="/")   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"build_app": "serving", "REPLICA_HEADER": "serving", "RayDataEngine": "data", "connect": "cluster"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'rerankd.ray' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rerankd.ray.{_WHERE[name]}"), name)
