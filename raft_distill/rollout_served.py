"""Rollouts from a served student (`rollout.engine: vllm` with `rollout.url`).

Generation leaves the training machine: a `vllm serve` of the student's starting weights
samples z, and after each optimizer step the trainer pushes the student's current weights
into it (TRL's server mode does the same with NCCL). The push goes through vLLM's own
APIs: the trainer writes the weights as one safetensors file into `rollout.sync_dir`, a
folder the server also sees (the same machine, or a cluster's shared file system), then
asks the server's workers, through its `/collective_rpc` endpoint, to reload them in
place (vllm_worker.StudentWeightSync, vLLM's `reload_weights`), and resets its prefix
cache. The file route costs one write and one read of the weights per step; vLLM's NCCL
weight transfer (`/init_weight_transfer_engine`) moves them GPU to GPU instead, and is not
wired here because none of its engines runs on CPU, where this is tested.

Sampling matches the colocated engine's: one request per prompt, each seeded from the
step seed (a resumed run samples the same z), token ids in and out, never text. The
server must not add its model's generation defaults (`--generation-config vllm`), or a
request would sample with settings the config does not show. A server that is down fails
at start-up naming the URL; a failed request is retried, then the step fails.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors.torch import save_file

from raft_distill.config import RolloutConfig
from raft_distill.errors import DistillError
from raft_distill.rollout import cut_at_eos
from raft_distill.vllm_engine import ServerClient
from raft_distill.vllm_worker import READY_METHOD, RELOAD_METHOD

log = logging.getLogger(__name__)

SERVE_HINT = (
    "start it with `VLLM_SERVER_DEV_MODE=1 vllm serve <student start> --generation-config vllm "
    "--worker-extension-cls raft_distill.vllm_worker.StudentWeightSync`"
)


class ServedRollout:
    """A vLLM server holding a copy of the student, reached over HTTP."""

    def __init__(
        self, url: str, rollout: RolloutConfig, sync_dir: Path, rank: int = 0,
        timeout_s: float = 600.0, retries: int = 3,
    ) -> None:
        hint = f"{SERVE_HINT}, or unset rollout.url to run the engine in this process"
        self.server = ServerClient(url, "rollout.url", hint, timeout_s, retries)
        self.url = self.server.url
        self.model = self.server.model
        self.rollout = rollout
        self.sync_dir = sync_dir
        self.rank = rank
        self._check_extension()

    def _check_extension(self) -> None:
        """The weight push needs dev mode's /collective_rpc and the worker extension."""
        response = self.server.client.post("/collective_rpc", json={"method": READY_METHOD}, timeout=30.0)
        if response.status_code == 404:
            raise DistillError(
                f"rollout.url {self.url}: the server has no /collective_rpc endpoint, so the "
                f"student's weights cannot be pushed to it; {SERVE_HINT}"
            )
        if response.status_code != 200:
            raise DistillError(
                f"rollout.url {self.url}: the server does not run raft_distill's worker extension "
                f"({response.status_code}: {response.text[-300:]}); {SERVE_HINT}"
            )

    @torch.no_grad()
    def sync_weights(self, named_params: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Write the student's weights to sync_dir and have the server reload them in place;
        returns how many tensors. Under DDP the replicas hold equal weights: rank 0 pushes,
        the others wait for it."""
        count = 0
        if self.rank == 0:
            weights = {name: p.detach().to("cpu").contiguous() for name, p in named_params}
            self.sync_dir.mkdir(parents=True, exist_ok=True)
            path = self.sync_dir / "student.safetensors"
            tmp = path.with_suffix(".tmp")
            save_file(weights, str(tmp))
            os.replace(tmp, path)  # the server never reads a half-written file
            result = self.server.post("/collective_rpc", {"method": RELOAD_METHOD, "args": [str(path)]})
            loaded = result.get("results") or [None]  # one per worker, as strings
            if any(str(n) != str(len(weights)) for n in loaded):
                raise DistillError(
                    f"rollout.url {self.url}: the server reloaded {loaded} tensors, sent {len(weights)}"
                )
            self.server.post("/reset_prefix_cache", {})  # KV blocks computed by the old weights
            count = len(weights)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
        return count

    def _request(self, prompt: list[int], eos_ids: set[int], seed: int | None, cfg: RolloutConfig) -> list[int]:
        greedy = cfg.temperature == 0.0
        body = {
            "model": self.model, "prompt": list(prompt), "max_tokens": cfg.max_new_tokens,
            "temperature": 0.0 if greedy else cfg.temperature,
            "top_p": 1.0 if greedy else cfg.top_p,
            "top_k": -1 if greedy or cfg.top_k == 0 else cfg.top_k,
            "repetition_penalty": 1.0, "min_p": 0.0,
            "stop_token_ids": sorted(eos_ids), "seed": seed, "return_token_ids": True,
        }
        (choice,) = self.server.post("/v1/completions", body)["choices"]
        ids = list(choice["token_ids"])
        stop = choice.get("stop_reason")
        if isinstance(stop, int) and (not ids or ids[-1] != stop):
            ids.append(stop)  # a stop token id ends the trajectory, as eos does in HF
        return cut_at_eos(ids, eos_ids)

    def sample(
        self, prompts: list[list[int]], eos_ids: set[int], seed: int, rollout: RolloutConfig | None = None
    ) -> list[list[int]]:
        """One trajectory per prompt; the requests run concurrently and the server batches
        them. Each gets its own seed drawn from `seed`, as in the colocated engine."""
        if not prompts:
            return []
        cfg = rollout or self.rollout
        rng = random.Random(seed)
        seeds = [None if cfg.temperature == 0.0 else rng.getrandbits(31) for _ in prompts]
        with ThreadPoolExecutor(max_workers=min(len(prompts), 64)) as pool:
            return list(pool.map(lambda p, s: self._request(p, eos_ids, s, cfg), prompts, seeds))

    def close(self) -> None:
        """Remove the pushed weights (a full copy of the student) and the connection."""
        if self.rank == 0:
            (self.sync_dir / "student.safetensors").unlink(missing_ok=True)
        self.server.close()
