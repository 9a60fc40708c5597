"""FSDP for the student (`train.fsdp: true`), on torch's own `fully_shard` (FSDP2).

accelerate only shards on GPUs (for CPU processes it quietly runs DDP instead), so the
student is sharded here with `torch.distributed.fsdp.fully_shard`, which runs on GPUs
(NCCL) and on CPUs (gloo) alike: the same code is tested with 2 CPU processes.

Layout: every decoder layer (the model's `_no_split_modules` classes) is its own FSDP
unit; the root `StudentScorer` unit holds the rest (embeddings, final norm, the tied or
untied head), so its forward, which runs the backbone and the loss head, sees them whole.
Checkpoints use torch.distributed.checkpoint (each process writes its shards, and reads
them back on resume); the final model is gathered into one plain HF folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn


def decoder_layers(lm: nn.Module) -> list[nn.Module]:
    """The modules HF marks as not to be split (the transformer blocks), in order."""
    names = set(getattr(lm, "_no_split_modules", None) or [])
    return [m for m in lm.modules() if type(m).__name__ in names]


def shard_student(model: nn.Module, device: torch.device) -> None:
    """Shard `model` (a StudentScorer) in place over the default process group."""
    from torch.distributed.fsdp import fully_shard

    if not torch.distributed.is_initialized():
        raise RuntimeError("FSDP needs a process group: launch with torchrun or accelerate")
    model.to(device)
    layers = decoder_layers(getattr(model, "lm", model))
    if not layers:
        raise RuntimeError(
            "FSDP: the model names no decoder layer classes (_no_split_modules); "
            "cannot choose what to shard"
        )
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    # FSDP2 sets up the root on its first forward; the first rollout calls the inner LM's
    # generate before any root forward, which would make a layer its own root. Set the
    # root up now (private torch API: there is no public one as of torch 2.13).
    model._get_fsdp_state()._lazy_init()  # type: ignore[operator]


@contextlib.contextmanager
def gathered(model: Any) -> Iterator[None]:
    """Whole root weights outside the root forward (HF `generate` on the inner LM); the
    layer units gather themselves in their own forward."""
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


@contextlib.contextmanager
def gradient_sync(model: Any, enabled: bool) -> Iterator[None]:
    """Skip the gradient reduce-scatter on all but the last micro-batch (as DDP no_sync)."""
    model.set_requires_gradient_sync(enabled)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def full_state_dict(model: nn.Module) -> dict[str, Any]:
    """The whole model's weights on CPU in the main process (empty elsewhere); collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def save_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every process writes its shards of the model and optimizer state; collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(folder))


def load_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Read back what `save_sharded` wrote into the sharded model and optimizer."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.load({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(folder))  # in place
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)
