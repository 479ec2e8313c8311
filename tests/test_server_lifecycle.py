"""`rerankd serve` as a process: flags from RERANKD_* env, /ready after warm-up, JSON access log, and
SIGTERM finishing in-flight work before exiting 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from rerankd.commands.serve import parse_model_spec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_model_spec() -> None:
    assert parse_model_spec("tiny=/models/x") == ("tiny", "/models/x")
    assert parse_model_spec("/models/x") == (None, "/models/x")
    assert parse_model_spec("org/model") == (None, "org/model")


@pytest.mark.slow
def test_serve_process_env_ready_log_and_graceful_sigterm(bert_ce: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "RERANKD_PORT": str(port), "RERANKD_API_KEY": "k", "RERANKD_MAX_WAIT_MS": "600",
           "RERANKD_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
    stderr_path = tmp_path / "stderr.log"
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "rerankd.cli", "serve", "--model", f"tiny={bert_ce}"],
                                env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, stderr_path.read_text()
                try:
                    if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server never became ready"
                time.sleep(0.1)
            headers = {"Authorization": "Bearer k"}
            assert httpx.get(f"{url}/v1/models", headers=headers).json()["data"][0]["id"] == "tiny"

            # A request that waits in the queue (max wait 600 ms) when SIGTERM arrives must still be answered.
            answer: dict[str, httpx.Response] = {}
            body = {"query": "capital of France", "documents": ["Paris", "Bananas", "Berlin"], "top_n": 2}
            sender = threading.Thread(target=lambda: answer.setdefault(
                "r", httpx.post(f"{url}/v2/rerank", json=body, headers=headers, timeout=30)))
            sender.start()
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            sender.join(30)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    r = answer["r"]
    assert r.status_code == 200 and len(r.json()["results"]) == 2
    lines = [json.loads(line) for line in stderr_path.read_text().splitlines() if line.startswith('{"event": "request"')]
    logged = [line for line in lines if line["route"] == "/v2/rerank"]
    assert logged and logged[0]["status"] == 200 and logged[0]["model"] == "tiny" and logged[0]["documents"] == 3
    assert logged[0]["tokens"] > 0 and logged[0]["latency_ms"] >= 0 and logged[0]["id"]
