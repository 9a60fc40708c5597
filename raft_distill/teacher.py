"""Teacher scoring of the student's trajectories (METHOD.md stage 2, step 2).

The frozen original model reads its context (the answer-conditioned template with y^ and
x, or x alone in on-policy mode) followed by z, and for each position of z keeps only its
top-K logits, their ids and the full-vocab logsumexp. lm_head runs on trajectory positions
only, in chunks, so the [batch, length, vocab] logits tensor never exists; its bias and the
model's logit post-processing are applied as the model's forward does (`head.py`).

z's t-th token is predicted by the hidden state at context length - 1 + t (`pack`), the
position before it; tests/distill/test_teacher_context.py pins this against a plain
forward of the whole sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from raft_distill.head import backbone, head_bias, logit_post, unwrap
from raft_distill.loss import chunked_topk


@dataclass
class Packed:
    """Right-padded sequences context + z, and where each z token is predicted from.

    batch_index/position_index: the N positions whose hidden state predicts a z token
    (sequence order, then token order); weight: 1/L_i at each of them (METHOD.md step 3);
    first: True where the position predicts z's first token (the context boundary).
    """

    input_ids: Tensor
    attention_mask: Tensor
    batch_index: Tensor
    position_index: Tensor
    targets: Tensor
    weight: Tensor
    first: Tensor


def pack(contexts: list[list[int]], continuations: list[list[int]], pad_id: int) -> Packed:
    """Concatenate each context with its continuation; index the continuation's predictors."""
    rows = [c + z for c, z in zip(contexts, continuations, strict=True)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    b_idx, p_idx, targets, weight, first = [], [], [], [], []
    for i, (c, z) in enumerate(zip(contexts, continuations, strict=True)):
        ids[i, : len(c) + len(z)] = torch.tensor(c + z, dtype=torch.long)
        mask[i, : len(c) + len(z)] = 1
        for t, tok in enumerate(z):
            b_idx.append(i)
            p_idx.append(len(c) - 1 + t)
            targets.append(tok)
            weight.append(1.0 / len(z))
            first.append(t == 0)
    return Packed(
        ids,
        mask,
        torch.tensor(b_idx, dtype=torch.long),
        torch.tensor(p_idx, dtype=torch.long),
        torch.tensor(targets, dtype=torch.long),
        torch.tensor(weight, dtype=torch.float32),
        torch.tensor(first, dtype=torch.bool),
    )


@dataclass
class TeacherScores:
    topk_values: Tensor  # [N, K] float32 teacher logits u_K
    topk_ids: Tensor  # [N, K] int64
    logsumexp: Tensor  # [N] float32, full vocabulary


@torch.no_grad()
def score(
    model: Any,
    packed: Packed,
    top_k: int,
    chunk: int,
    device: torch.device,
    autocast: bool = False,
) -> TeacherScores:
    """Teacher top-K logits (the model's own: bias, scale, soft-cap) at every z position.
    `model` may be a peft model (its adapters disabled or not, as its caller set them)."""
    model = unwrap(model)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
        hidden = backbone(model)(
            input_ids=packed.input_ids.to(device),
            attention_mask=packed.attention_mask.to(device),
            use_cache=False,
        ).last_hidden_state
    h = hidden[packed.batch_index.to(device), packed.position_index.to(device)]
    weight = model.get_output_embeddings().weight
    post = logit_post(model.config)
    values, ids, lse = chunked_topk(h, weight, top_k, chunk, head_bias(model), post)
    return TeacherScores(values, ids, lse)
