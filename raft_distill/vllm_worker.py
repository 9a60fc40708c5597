"""The vLLM worker extension a served rollout engine runs (`rollout.url`).

Start the student's server with it, so the trainer can push the student's weights after
each optimizer step (rollout_served.py):

    VLLM_SERVER_DEV_MODE=1 vllm serve <student start> --generation-config vllm \\
        --worker-extension-cls raft_distill.vllm_worker.StudentWeightSync

vLLM mixes this class into its worker; the trainer calls its method by name through the
server's `/collective_rpc` endpoint (dev mode), as TRL's server mode calls its own
extension. The weights travel as a safetensors file on a folder both machines see
(`rollout.sync_dir`); the reload itself is vLLM's in-place `reload_weights`, the same one
the colocated engine uses (rollout_vllm.py). Imports nothing heavy: it is loaded inside
vLLM's worker process.
"""

from __future__ import annotations

from typing import Any

RELOAD_METHOD = "raft_reload_student"
READY_METHOD = "raft_weight_sync_ready"


class StudentWeightSync:
    """Methods vLLM adds to its worker (`--worker-extension-cls`)."""

    def raft_weight_sync_ready(self) -> str:
        """Lets the trainer check at start-up that the server runs this extension."""
        return "ok"

    def raft_reload_student(self, path: str) -> int:
        """Load the student's weights from a safetensors file, in place; returns how many
        tensors. The tied LM head is reprocessed as in the colocated engine."""
        from safetensors.torch import load_file

        from raft_distill.rollout_vllm import _reprocess_tied_head

        weights = load_file(path)
        worker: Any = self
        worker.reload_weights(weights_iterator=list(weights.items()), is_checkpoint_format=True)
        _reprocess_tied_head(worker)
        return len(weights)
