"""rerankd's HTTP server: every rerank dialect (Cohere, Jina, TEI, vLLM) over one batched engine.

Importing this package is light; FastAPI, uvicorn and prometheus-client load when an app is created.
"""

from rerankd.server.settings import ServerSettings


def create_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    """See :func:`rerankd.server.app.create_app` (imported lazily: it needs the ``server`` extra)."""
    from rerankd.server.app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = ["ServerSettings", "create_app"]
