"""uvicorn serving an app on 127.0.0.1:<free port> in a background thread, for HTTP tests."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx


class LiveServer:
    """``with LiveServer(app) as live:`` — started, warmed (``/ready``), and stopped after the block."""

    def __init__(self, app: Any, start_timeout_s: float = 120) -> None:
        import uvicorn

        self.app = app
        self.start_timeout_s = start_timeout_s
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        while httpx.get(f"{self.url}/ready").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the test server never became ready")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(30)
