"""`vllm serve` on the loopback interface for tests: the served teacher and the served
student (tests/distill/test_teacher_vllm.py, tests/distill/test_rollout_served.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def vllm_server(model: Path, tmp: Path, args: list[str], env: dict[str, str] | None = None) -> Iterator[str]:
    """A float32 eager server for `model` (its own caches under `tmp`); yields its base URL,
    stops it on exit. The server's log is in the failure message if it does not start."""
    port = free_port()
    full_env = {**os.environ, "VLLM_CACHE_ROOT": str(tmp / "cache"), "VLLM_CPU_KVCACHE_SPACE": "1",
                "TORCHINDUCTOR_CACHE_DIR": str(tmp / "inductor"), **(env or {})}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
           "--max-model-len", "512", "--no-enable-chunked-prefill", *args]
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(2)
        else:
            pytest.fail(f"vllm serve did not start: {(tmp / 'server.log').read_text()[-3000:]}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
