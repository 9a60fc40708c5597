"""Student scoring: the only trainable forward pass (METHOD.md stage 2, steps 2-4).

`StudentScorer` wraps the causal LM so that DDP and FSDP see ONE forward that runs the
backbone and ends in a loss head, with lm_head used inside it (FSDP only unshards weights
during a wrapped forward):
- kind="kl": the student's logits v_K at the teacher's top-K ids for every z position,
  as h . W[ids]^T (`loss.gathered_logits`);
- kind="sft": the summed token cross-entropy of the SFT target (`loss.chunked_ce_sum`);
- kind="joint": both from one backbone pass over rows packed by `joint.pack_joint` (its
  4D mask and position ids): the CE sum at (batch_index, position_index) and the K logits
  at (kl_batch_index, kl_position_index).
Both add lm_head's bias and apply the model's own logit post-processing (`head.py`), so
they are the logits the model's forward would return.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from raft_distill.head import backbone, head_bias, logit_post
from raft_distill.loss import chunked_ce_sum, gathered_logits


class StudentScorer(nn.Module):
    def __init__(self, lm: Any, chunk: int = 64) -> None:
        super().__init__()
        self.lm = lm
        self.chunk = chunk
        self.post = logit_post(lm.config)  # the model's own scale / soft-cap after lm_head
        # FSDP's transformer auto-wrap reads the layer classes to shard from the root module
        self._no_split_modules = getattr(lm, "_no_split_modules", None)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        batch_index: Tensor,
        position_index: Tensor,
        kind: str,
        targets: Tensor | None = None,
        topk_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        kl_batch_index: Tensor | None = None,
        kl_position_index: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        hidden = backbone(self.lm)(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        ).last_hidden_state
        h = hidden[batch_index, position_index]
        weight = self.lm.get_output_embeddings().weight
        bias = head_bias(self.lm)
        if kind == "sft":
            assert targets is not None
            return chunked_ce_sum(h, weight, targets, self.chunk, bias, self.post)
        if kind == "kl":
            assert topk_ids is not None
            return gathered_logits(h, weight, topk_ids, self.chunk, bias, self.post)
        if kind == "joint":
            assert targets is not None and topk_ids is not None
            h_kl = hidden[kl_batch_index, kl_position_index]
            ce = chunked_ce_sum(h, weight, targets, self.chunk, bias, self.post)
            return ce, gathered_logits(h_kl, weight, topk_ids, self.chunk, bias, self.post)
        raise ValueError(f"unknown kind {kind!r}")


def apply_tf32(setting: bool | None, device: torch.device) -> bool:
    """`train.tf32`, as transformers' `TrainingArguments.tf32`: on CUDA, True / False set
    torch's TF32 flags for matmuls and cuDNN; None leaves torch's own (matmuls: off). The
    lm_head chunks of the loss (teacher top-K, SFT cross-entropy, K-gathered student logits)
    run in float32 with autocast off, so TF32 is what lets them use tensor cores. Returns
    whether float32 matmuls now run as TF32; nothing changes on CPU."""
    if device.type != "cuda":
        return False
    if setting is not None:
        torch.backends.cuda.matmul.allow_tf32 = setting
        torch.backends.cudnn.allow_tf32 = setting
    return bool(torch.backends.cuda.matmul.allow_tf32)


def autocast_supported(device: torch.device) -> bool:
    """bf16 autocast runs on every CPU (fast with AVX-512 BF16/AMX) and on bf16-capable GPUs."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu"
