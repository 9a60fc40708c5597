"""The stage-2 losses as pure tensor functions (METHOD.md stage 2, steps 3 and 4).

Positions are flattened: a micro-batch's trajectory (or target) positions form one axis of
length N, and each position carries the weight it has in the sequence mean. Dividing by
the number of sequences (KL) or target tokens (SFT) of the WHOLE optimizer step is left to
the caller, which makes the loss independent of how a step is split into micro-batches or
processes (the sum of the pieces is the loss of the step).

Full-vocabulary logits are never kept for more than `chunk` positions at a time:
- the teacher's top-K comes from lm_head applied chunk by chunk (`chunked_topk`);
- the student's K logits are h . W[ids]^T (`gathered_logits`), a custom autograd function
  that saves only h and the ids, and re-gathers W rows chunk by chunk in backward;
- the SFT cross-entropy is torch's chunked `F.linear_cross_entropy` (`chunked_ce_sum`): each
  chunk's gradients are made in the forward pass and accumulated in place.
All three add the head's bias (if any) and apply the model's own post-processing
(`LogitPost`: a logit scale, final-logit soft-capping), so their logits are the model's
(METHOD.md step 2, implementation note; `head.py` reads both from the model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

# torch >= 2.13: the chunked linear + cross-entropy op; an older torch (the one a GPU vLLM
# pins may be) has none, and `chunked_ce_sum` uses its checkpointed form there
_LINEAR_CE_OPTIONS: Any = getattr(torch.nn, "LinearCrossEntropyOptions", None)


@dataclass(frozen=True)
class LogitPost:
    """What a model does to h . W^T (+ bias) before returning logits: scale, then soft-cap.

    scale: Cohere's `logit_scale` (x s), Granite's `logits_scaling` (x 1/s);
    softcap: Gemma-2/3's `final_logit_softcapping` c, logits -> c * tanh(logits / c).
    Both are monotonic, so the top-K ids of the raw and post-processed logits agree, but
    the values (and so q, p and the KL) do not. The default is the identity (Llama heads).
    """

    scale: float = 1.0
    softcap: float | None = None

    def __call__(self, logits: Tensor) -> Tensor:
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


IDENTITY = LogitPost()


def topk_forward_kl(teacher_topk: Tensor, student_topk: Tensor, temperature: float) -> Tensor:
    """Per-position KL(q || p) with q = softmax(u_K / T) and p = softmax(v_K / T).

    METHOD.md step 3. `teacher_topk` u_K and `student_topk` v_K are [..., K] logits at the
    same K token ids (the teacher's top-K). Teacher ids with logit -inf get q = 0 and add
    nothing (0 log 0 = 0). Computed in float32 whatever the input dtype.
    """
    log_q = F.log_softmax(teacher_topk.float() / temperature, dim=-1)
    log_p = F.log_softmax(student_topk.float() / temperature, dim=-1)
    q = log_q.exp()
    terms = torch.where(q > 0, q * (log_q - log_p), torch.zeros_like(q))
    return terms.sum(dim=-1)


def kl_sequence_sum(kl_per_position: Tensor, position_weight: Tensor, temperature: float) -> Tensor:
    """T^2 * sum_i (1/L_i) sum_t KL_t for the positions given.

    `position_weight` is 1/L_i at each position of sequence i (0 for padding), so dividing
    the result by the number of sequences of the optimizer step gives
    L_KL = T^2 * mean_i [(1/L_i) sum_t KL(q_t || p_t)].
    """
    return temperature**2 * (kl_per_position * position_weight).sum()


def reference_weights(
    teacher_top1: Tensor, reference_ids: Tensor, position_weight: Tensor, mask: bool
) -> tuple[Tensor, Tensor]:
    """(where the teacher's top-1 starts a word of its own context such as 'reference', the
    KL position weights, zero there when `mask`). At those positions the teacher is about
    to talk about the reference it reads, which the student never sees: distilled as is,
    the student learns to say "The reference knowledge is ..." (loss.mask_reference_kl)."""
    at_reference = torch.isin(teacher_top1.to(position_weight.device), reference_ids)
    if mask:
        position_weight = position_weight * (~at_reference).to(position_weight.dtype)
    return at_reference, position_weight


def padded_kl_loss(
    teacher_topk: Tensor, student_topk: Tensor, mask: Tensor, temperature: float, n_sequences: int
) -> Tensor:
    """L_KL on padded [B, L, K] tensors with a [B, L] trajectory mask (reference form)."""
    kl = topk_forward_kl(teacher_topk, student_topk, temperature)
    mask = mask.to(kl.dtype)
    lengths = mask.sum(dim=1, keepdim=True).clamp_min(1.0)
    return kl_sequence_sum(kl, mask / lengths, temperature) / n_sequences


def sft_token_ce_sum(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Sum of -log p(target) over masked-in positions (METHOD.md step 4, before the mean).

    Divide by the number of target tokens of the optimizer step for the token mean.
    """
    ce = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )
    return (ce * mask.reshape(-1).to(ce.dtype)).sum()


def _full_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, post: LogitPost) -> Tensor:
    logits = hidden.float() @ weight.float().t()
    if bias is not None:
        logits = logits + bias.float()
    return post(logits)


def _ce_chunk(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, post: LogitPost
) -> Tensor:
    return F.cross_entropy(_full_logits(hidden, weight, bias, post), targets, reduction="sum")


def chunked_ce_sum(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    chunk: int,
    bias: Tensor | None = None,
    post: LogitPost = IDENTITY,
) -> Tensor:
    """Sum of token CE of `targets` [N] under logits post(hidden [N, H] @ weight [V, H]^T + bias),
    in float32, `chunk` positions of full-vocab logits at a time.

    torch's own `F.linear_cross_entropy` (torch >= 2.13) with `batch_chunk_size=chunk`: it
    computes each chunk's gradients in the forward pass and accumulates the weight's in
    place, so the backward recomputes nothing and no [V, H] gradient is made per chunk
    (three matmul passes instead of four; 1.5-1.7x faster than the checkpointed form on
    CPU, docs/benchmarks.md section 7). A logit scale s enters as (s h) . W^T + s b.
    Soft-capping (Gemma-2/3) is not linear in the logits, so those heads, and any torch
    without the op, use the checkpointed form: each chunk's logits recomputed in backward.
    """
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        if post.softcap is None and _LINEAR_CE_OPTIONS is not None:
            h, b = hidden.float(), None if bias is None else bias.float()
            if post.scale != 1.0:
                h, b = h * post.scale, None if b is None else b * post.scale
            options = _LINEAR_CE_OPTIONS(batch_chunk_size=chunk, chunking_method=None)
            return F.linear_cross_entropy(
                h, weight.float(), targets, linear_bias=b, reduction="sum", options=options
            )
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk):
            end = start + chunk
            part = checkpoint(
                _ce_chunk,
                hidden[start:end],
                weight,
                bias,
                targets[start:end],
                post,
                use_reentrant=False,
            )
            total = total + part
    return total


@torch.no_grad()
def chunked_topk(
    hidden: Tensor,
    weight: Tensor,
    k: int,
    chunk: int,
    bias: Tensor | None = None,
    post: LogitPost = IDENTITY,
) -> tuple[Tensor, Tensor, Tensor]:
    """Teacher top-K logits, their ids and the full-vocab logsumexp, chunk by chunk.

    Logits are post(hidden @ weight^T + bias): the model's own (see `LogitPost`).

    Returns (values [N, K] float32, ids [N, K] int64, logsumexp [N] float32). The
    logsumexp gives the teacher's top-K probability mass exp(lse(u_K) - lse(u)).
    """
    values, ids, lse = [], [], []
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        w = weight.float()
        for start in range(0, hidden.shape[0], chunk):
            logits = _full_logits(hidden[start : start + chunk], w, bias, post)
            top = torch.topk(logits, k=min(k, logits.shape[-1]), dim=-1)
            values.append(top.values)
            ids.append(top.indices)
            lse.append(torch.logsumexp(logits, dim=-1))
    if not values:
        n = hidden.shape[0]
        return (
            hidden.new_zeros((n, k), dtype=torch.float32),
            torch.zeros((n, k), dtype=torch.long, device=hidden.device),
            hidden.new_zeros((n,), dtype=torch.float32),
        )
    return torch.cat(values), torch.cat(ids), torch.cat(lse)


def topk_mass(teacher_topk: Tensor, teacher_lse: Tensor) -> Tensor:
    """Teacher probability mass (T = 1) held by its top-K ids, per position."""
    return torch.exp(torch.logsumexp(teacher_topk.float(), dim=-1) - teacher_lse.float())


class _GatheredLogits(torch.autograd.Function):
    """v[n, k] = h[n] . W[ids[n, k]], without a saved [N, K, H] gather."""

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, ids: Tensor, chunk: int) -> Tensor:
        ctx.save_for_backward(hidden, weight, ids)
        ctx.chunk = chunk
        out = hidden.new_empty(ids.shape, dtype=torch.float32)
        h32 = hidden.float()
        for start in range(0, ids.shape[0], chunk):
            rows = weight[ids[start : start + chunk]].float()  # [n, K, H]
            out[start : start + chunk] = torch.bmm(rows, h32[start : start + chunk, :, None])[
                ..., 0
            ]
        return out

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        (grad_out,) = grads
        hidden, weight, ids = ctx.saved_tensors
        chunk = ctx.chunk
        grad_out = grad_out.float()
        grad_h = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_h = torch.empty_like(hidden, dtype=torch.float32)
        if ctx.needs_input_grad[1]:
            grad_w = torch.zeros_like(weight, dtype=torch.float32)
        h32 = hidden.float()
        for start in range(0, ids.shape[0], chunk):
            g = grad_out[start : start + chunk]  # [n, K]
            idx = ids[start : start + chunk]
            if grad_h is not None:
                rows = weight[idx].float()
                grad_h[start : start + chunk] = torch.bmm(g[:, None, :], rows)[:, 0]
            if grad_w is not None:
                h = h32[start : start + chunk]
                contrib = g[:, :, None] * h[:, None, :]  # [n, K, H]
                grad_w.index_add_(0, idx.reshape(-1), contrib.reshape(-1, h.shape[-1]))
        return (
            None if grad_h is None else grad_h.to(hidden.dtype),
            None if grad_w is None else grad_w.to(weight.dtype),
            None,
            None,
        )


def gathered_logits(
    hidden: Tensor,
    weight: Tensor,
    ids: Tensor,
    chunk: int = 64,
    bias: Tensor | None = None,
    post: LogitPost = IDENTITY,
) -> Tensor:
    """Student logits at the teacher's K ids: v_K = post(h . W[ids]^T + b[ids]), in float32.

    Equals `post(hidden @ weight.T + bias).gather(-1, ids)` (tested) at K/V of the matmul
    cost and without materialising the [N, V] logits; bias and post act on [N, K] only.
    """
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        out: Tensor = _GatheredLogits.apply(hidden, weight, ids, chunk)
        if bias is not None:
            out = out + bias.float()[ids]
        return post(out)
