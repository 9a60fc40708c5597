"""Log-likelihood multiple choice with HF transformers: every choice scored, prefix shared.

An item is a context and k continuations (`mc_tasks.MCItem`). The model reads each item
once as one row: the context's tokens, then every continuation's tokens, with a 4-D
attention mask in which a continuation sees the context and its own earlier tokens but
no other continuation, and position ids that restart after the context for each one:

    tokens     c0 c1 c2 | a0 a1 | b0 b1 b2
    positions   0  1  2 |  3  4 |  3  4  5
    a1 sees    c0 c1 c2   a0 a1

So the logits at each continuation token equal those of a separate forward over
`context + that continuation` (tests/eval/test_loglik.py checks this against a plain
per-choice forward), while the context is computed once instead of k times. Rows are
sorted by length and batched under a token budget (right padding; a pad token sees the
context and itself only and is never seen). The LM head runs only on the positions that
predict a continuation token (`head.head_logits`: bias, logit scale and soft-capping as
the model applies them), in chunks, so full-vocabulary logits are never materialised for
context tokens.

Tokenisation: context and each continuation are tokenised separately without special
tokens (lm-evaluation-harness tokenises context + continuation together and splits at
the context's length; with byte-level BPE and continuations that start with a space, as
all here do, the two agree). A context longer than `max_length` minus the longest
continuation is cut from the left, as the harness does.

Scores, as lm-evaluation-harness defines them: `acc` picks the choice with the highest
summed log-probability; `acc_norm` divides it by the choice's length in characters
(without the delimiter) first. Ties go to the first choice (argmax).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from raft_distill.evaluate.mc_tasks import TASKS, MCItem
from raft_distill.head import backbone, head_logits

HEAD_CHUNK = 256  # prediction positions per LM-head matmul


@dataclass(frozen=True)
class Packed:
    """One item as one row: token ids, position ids, segment per token (-1 = context,
    k = choice k), and per choice the row positions whose logits predict its tokens."""

    ids: list[int]
    positions: list[int]
    segments: list[int]
    predictors: list[list[int]]
    targets: list[list[int]]


def pack(context: list[int], continuations: Sequence[list[int]], max_length: int) -> Packed:
    """Lay out one item as described in the module docstring."""
    if not context or any(not c for c in continuations):
        raise ValueError("context and every continuation need at least one token")
    longest = max(len(c) for c in continuations)
    context = context[-max(1, max_length - longest) :]
    n_ctx = len(context)
    ids, positions = list(context), list(range(n_ctx))
    segments = [-1] * n_ctx
    predictors, targets = [], []
    for k, cont in enumerate(continuations):
        start = len(ids)
        ids.extend(cont)
        positions.extend(range(n_ctx, n_ctx + len(cont)))
        segments.extend([k] * len(cont))
        predictors.append([n_ctx - 1] + list(range(start, start + len(cont) - 1)))
        targets.append(list(cont))
    return Packed(ids, positions, segments, predictors, targets)


def attention_mask(segments: Tensor, dtype: torch.dtype) -> Tensor:
    """[B, 1, T, T] additive mask: 0 where query q may see key k (k <= q, and k is context
    or in q's own segment), the dtype's minimum elsewhere."""
    t = segments.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segments.device).tril()
    seg_q, seg_k = segments[:, :, None], segments[:, None, :]
    allowed = causal[None] & ((seg_k == -1) | (seg_q == seg_k))
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Row indices grouped by length (longest first) so that rows x longest <= budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1) * width > token_budget:
            out.append(current)
            current = []
        current.append(i)
    if current:
        out.append(current)
    return out


@torch.inference_mode()
def score_packed(lm: Any, rows: list[Packed]) -> list[list[float]]:
    """Summed log-probability of every continuation of every row, in one forward."""
    device = next(lm.parameters()).device
    dtype = next(lm.parameters()).dtype
    width = max(len(r.ids) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    pos = torch.zeros(len(rows), width, dtype=torch.long)
    # pads get distinct segments < -1: each sees the context and itself, nobody sees it
    seg = -2 - torch.arange(width).repeat(len(rows), 1)
    for b, r in enumerate(rows):
        n = len(r.ids)
        ids[b, :n] = torch.tensor(r.ids)
        pos[b, :n] = torch.tensor(r.positions)
        seg[b, :n] = torch.tensor(r.segments)
    hidden = backbone(lm)(
        input_ids=ids.to(device),
        attention_mask=attention_mask(seg.to(device), dtype),
        position_ids=pos.to(device),
        use_cache=False,
    ).last_hidden_state
    flat = hidden.reshape(-1, hidden.shape[-1])
    where = [b * width + p for b, r in enumerate(rows) for pred in r.predictors for p in pred]
    tokens = [t for r in rows for tgt in r.targets for t in tgt]
    index = torch.tensor(where, device=device)
    target = torch.tensor(tokens, device=device)
    logp = torch.empty(len(where), dtype=torch.float32, device=device)
    for s in range(0, len(where), HEAD_CHUNK):
        logits = head_logits(lm, flat[index[s : s + HEAD_CHUNK]])
        logp[s : s + HEAD_CHUNK] = (
            logits.log_softmax(-1).gather(-1, target[s : s + HEAD_CHUNK, None]).squeeze(-1)
        )
    values = logp.double().cpu().tolist()
    out: list[list[float]] = []
    cursor = 0
    for r in rows:
        sums = []
        for tgt in r.targets:
            sums.append(float(sum(values[cursor : cursor + len(tgt)])))
            cursor += len(tgt)
        out.append(sums)
    return out


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def score_items(
    lm: Any,
    tokenizer: Any,
    items: Sequence[MCItem],
    token_budget: int = 4096,
    max_length: int = 2048,
    progress: bool = True,
    desc: str = "loglik",
) -> list[list[float]]:
    """Summed log-probability of each choice of each item (items in the given order)."""
    from tqdm import tqdm

    rows = [
        pack(encode(tokenizer, it.context), [encode(tokenizer, c) for c in it.continuations()], max_length)
        for it in items
    ]
    out: list[list[float]] = [[] for _ in items]
    groups = batches([len(r.ids) for r in rows], max(token_budget, max_length))
    with tqdm(total=len(items), desc=desc, unit="item", disable=not progress, smoothing=0.1) as bar:
        for group in groups:
            for i, sums in zip(group, score_packed(lm, [rows[i] for i in group]), strict=True):
                out[i] = sums
            bar.update(len(group))
    return out


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda k: (values[k], -k))


def predictions(item: MCItem, logliks: Sequence[float]) -> tuple[int, int]:
    """(acc prediction, acc_norm prediction): argmax of sum, argmax of sum / characters."""
    norm = [ll / max(1, len(c)) for ll, c in zip(logliks, item.choices, strict=True)]
    return _argmax(logliks), _argmax(norm)


def item_rows(items: Sequence[MCItem], logliks: Sequence[Sequence[float]]) -> list[dict[str, Any]]:
    """Per item: choices' log-likelihoods, both predictions, both scores and the headline
    `correct` (the task's metric, `mc_tasks.TASKS`)."""
    rows = []
    for item, lls in zip(items, logliks, strict=True):
        pred, pred_norm = predictions(item, lls)
        acc, acc_norm = int(pred == item.gold), int(pred_norm == item.gold)
        metric = item.metric or (TASKS[item.task].metric if item.task in TASKS else "acc")
        rows.append(
            {
                "task": item.task,
                "id": item.id,
                "gold": item.gold,
                "loglik": [round(x, 4) for x in lls],
                "pred": pred,
                "pred_norm": pred_norm,
                "acc": acc,
                "acc_norm": acc_norm,
                "correct": acc_norm if metric == "acc_norm" else acc,
            }
        )
    return rows


def mc_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`accuracy`: mean headline score over all items (tasks pooled; equal task sizes make
    it the mean of the task scores), and per task acc, acc_norm and the headline."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    metrics: dict[str, Any] = {
        "accuracy": sum(r["correct"] for r in rows) / len(rows) if rows else 0.0
    }
    for key in ("correct", "acc", "acc_norm"):
        name = "by_task" if key == "correct" else f"{key}_by_task"
        metrics[name] = {t: sum(r[key] for r in rs) / len(rs) for t, rs in by_task.items()}
    return metrics


def no_boolq_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """`accuracy_no_boolq`: the pooled accuracy without BoolQ (absent when every item is
    BoolQ). BoolQ's two continuations are " no" / " yes": a shift in a small model's yes/no
    preference moves it by tens of points (the base model scores 39.6, below the 62% "yes"
    majority class) with no change in what the model knows."""
    kept = [r["correct"] for r in rows if r["task"] != "boolq"]
    return {"accuracy_no_boolq": sum(kept) / len(kept)} if kept else {}
