"""LoRA for `raft-distill fit` (`train.lora`): adapters on the student, the base as teacher.

The student is the base model with peft LoRA adapters injected; only the adapters train
(the base weights are frozen, and the optimizer only sees the adapters). The frozen teacher
of METHOD.md stage 2 is the student's starting weights: with LoRA that is the same model
with the adapters disabled (`adapters_off`), so one copy of the base is in memory, not two.
The saved model is the merged one, W + (alpha / r) B A per adapted layer, computed into a
new state dict (`merged_state_dict`) so training goes on with the adapters unmerged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from raft_distill.config import LoraConfig
from raft_distill.errors import DistillError


def add_adapters(lm: Any, cfg: LoraConfig, seed: int) -> Any:
    """The PeftModel around `lm` (adapters injected into `lm` in place; base frozen). The
    adapters' random init (A; B is zero) is drawn from `seed`, so runs repeat."""
    try:
        import peft
    except ImportError:
        raise DistillError(
            "train.lora needs the peft library: `pip install peft` (the lora extra: "
            "pip install -e '.[lora]'), or remove train.lora for full fine-tuning"
        ) from None
    config = peft.LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
    )
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = peft.get_peft_model(lm, config)
    except ValueError as err:
        raise DistillError(f"train.lora.target_modules {cfg.target_modules!r}: {err}") from None
    _refuse_head_adapters(model.get_base_model(), cfg)
    return model


def _refuse_head_adapters(lm: Any, cfg: LoraConfig) -> None:
    """The student's logits are h . W^T with lm_head's weight read directly (`head.py`), and
    a tied head shares the input embedding: an adapter on either would be ignored or merged
    into both. Refused, naming the module."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    heads = {id(lm.get_output_embeddings()), id(lm.get_input_embeddings())}
    for name, module in lm.named_modules():
        if isinstance(module, BaseTunerLayer) and {id(module), id(module.get_base_layer())} & heads:
            raise DistillError(
                f"train.lora.target_modules {cfg.target_modules!r} puts an adapter on "
                f"'{name}' (the embeddings / lm_head), which is not supported: name the "
                "linear layers of the transformer blocks, or use 'all-linear'"
            )


@contextlib.contextmanager
def adapters_off(model: Any) -> Iterator[Any]:
    """The base model (the frozen teacher): adapters disabled, eval mode (no dropout)."""
    training = model.training
    model.eval()
    try:
        with model.disable_adapter():
            yield model
    finally:
        model.train(training)


@torch.no_grad()
def merged_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The base model's state dict, original names, each adapted weight W + delta (B A
    scaled), as the merged model would hold it; the adapters stay as they are."""
    from peft.tuners.lora import LoraLayer

    lm = model.get_base_model()
    deltas: dict[str, torch.Tensor] = {}
    for name, module in lm.named_modules():
        if isinstance(module, LoraLayer):
            layer: Any = module
            for adapter in layer.active_adapters:  # one ("default") here
                key = f"{name}.weight"
                delta = layer.get_delta_weight(adapter)
                deltas[key] = deltas[key] + delta if key in deltas else delta
    state: dict[str, torch.Tensor] = {}
    for key, value in lm.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        state[key] = value + deltas[key].to(value.dtype) if key in deltas else value
    return state


def merged_parameters(model: Any) -> list[tuple[str, torch.Tensor]]:
    """`merged_state_dict` as `named_parameters` names them (a tied head once): what the
    vLLM engine gets at each sync (`VLLMRollout.sync_weights`)."""
    names = [n.replace(".base_layer.", ".") for n, _ in model.get_base_model().named_parameters()]
    state = merged_state_dict(model)
    return [(n, state[n]) for n in names if ".lora_" not in n]


def save(model: Any, folder: Path, merged: bool) -> None:
    """adapter/ in peft's format; with `merged`, the merged full model in `folder` itself."""
    model.save_pretrained(folder / "adapter", safe_serialization=True)
    if merged:
        lm = model.get_base_model()
        lm.save_pretrained(folder, state_dict=merged_state_dict(model), safe_serialization=True)
