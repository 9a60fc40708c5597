"""The AdamW the trainer builds: torch's fused implementation where torch has one for the
device (CPU and CUDA in torch 2.13), same steps as the for-loop one; benchmarks/adamw.py
measured it ~6x faster on CPU (docs/benchmarks.md)."""

from __future__ import annotations

import torch

from raft_distill.config import config_from_dict
from raft_distill.train import Trainer, adamw_kwargs
from tests.distill.helpers import tiny_config


def test_trainer_builds_fused_adamw_on_cpu(tiny_model_dir, tiny_dataset, tmp_path):
    trainer = Trainer(config_from_dict(tiny_config(tiny_model_dir, tiny_dataset, tmp_path / "r")))
    try:
        inner = getattr(trainer.parts.optimizer, "optimizer", trainer.parts.optimizer)  # accelerate's wrapper
        assert inner.defaults["fused"] is True
    finally:
        trainer.close()


def test_fused_only_where_torch_has_it():
    cpu = [torch.nn.Parameter(torch.zeros(2, 2))]
    assert adamw_kwargs(cpu, fsdp=False) == {"fused": True}
    assert adamw_kwargs(cpu, fsdp=True) == {}  # FSDP2 DTensor shards: torch's default
    meta = [torch.nn.Parameter(torch.zeros(2, 2, device="meta"))]
    assert adamw_kwargs(meta, fsdp=False) == {}
    assert adamw_kwargs([], fsdp=False) == {}


def test_a_torch_without_the_private_helper_keeps_the_default(monkeypatch):
    import torch.optim.optimizer as opt

    monkeypatch.delattr(opt, "_get_fused_kernels_supported_devices")
    assert adamw_kwargs([torch.nn.Parameter(torch.zeros(2, 2))], fsdp=False) == {}
