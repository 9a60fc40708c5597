"""Negative log-likelihood of a reference answer, laid out exactly as stage 2's SFT target.

At 135M, SFT on a few hundred explanations moves the probability of the domain's answers
long before it moves greedy accuracy or multiple-choice picks; the answer NLL measures that
movement directly. The row is the one stage 2 trains on (`raft_distill.data`):

    student_prompt_ids(question)   the chat template's user turn + generation prompt
    text_ids(answer) + [eos]       the SFT target: the answer as data, then the end token

and the score is the summed token NLL of the target (end token included, since the SFT
loss trains it) with its token count. Rows are right-padded and batched under a token
budget (rows x longest row, as `loglik.batches`); the LM head runs only on the positions
that predict a target token, in float32 (`head.head_logits`), without gradients.

The `domain_nll` suite reads (question, answer) rows from a JSONL (`load_nll`) and reports
`nll`, the mean over items of each item's mean token NLL (every question counts the same),
and `nll_token_weighted`, summed NLL over summed tokens (long answers count more); nats,
lower is better.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from raft_distill.data import student_prompt_ids
from raft_distill.errors import DistillError
from raft_distill.evaluate.jsonl import jsonl_rows
from raft_distill.evaluate.loglik import HEAD_CHUNK, batches
from raft_distill.head import backbone, head_logits
from schemas.chat import text_ids


def sft_row(tokenizer: Any, question: str, answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, target ids) of one (question, answer) as stage 2 builds them."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DistillError("the tokenizer has no eos token; the SFT target ends with it")
    return student_prompt_ids(tokenizer, question), text_ids(tokenizer, answer) + [int(eos)]


@torch.inference_mode()
def _score_batch(lm: Any, rows: list[tuple[list[int], list[int]]]) -> list[float]:
    """Summed NLL of each row's target tokens, one forward over the right-padded batch."""
    device = next(lm.parameters()).device
    width = max(len(p) + len(t) for p, t in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    where: list[int] = []
    tokens: list[int] = []
    for b, (prompt, target) in enumerate(rows):
        n = len(prompt) + len(target)
        ids[b, :n] = torch.tensor(prompt + target)
        mask[b, :n] = 1
        where.extend(b * width + len(prompt) - 1 + j for j in range(len(target)))
        tokens.extend(target)
    hidden = backbone(lm)(
        input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False
    ).last_hidden_state
    flat = hidden.reshape(-1, hidden.shape[-1])
    index = torch.tensor(where, device=device)
    target_ids = torch.tensor(tokens, device=device)
    nll = torch.empty(len(where), dtype=torch.float64)
    for s in range(0, len(where), HEAD_CHUNK):
        logits = head_logits(lm, flat[index[s : s + HEAD_CHUNK]])
        picked = logits.log_softmax(-1).gather(-1, target_ids[s : s + HEAD_CHUNK, None])
        nll[s : s + HEAD_CHUNK] = -picked.squeeze(-1).double().cpu()
    out: list[float] = []
    cursor = 0
    for _, target in rows:
        out.append(float(nll[cursor : cursor + len(target)].sum()))
        cursor += len(target)
    return out


def answer_nll(
    lm: Any,
    tokenizer: Any,
    questions: Sequence[str],
    answers: Sequence[str],
    token_budget: int = 4096,
) -> list[tuple[float, int]]:
    """Per pair: (summed NLL of the SFT target given the student prompt, its token count).

    The target is the answer's tokens plus the end token (see the module docstring); a
    row longer than `token_budget` is scored alone, never cut.
    """
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    rows = [sft_row(tokenizer, q, a) for q, a in zip(questions, answers, strict=True)]
    out: list[tuple[float, int]] = [(0.0, 0)] * len(rows)
    for group in batches([len(p) + len(t) for p, t in rows], token_budget):
        sums = _score_batch(lm, [rows[i] for i in group])
        for i, total in zip(group, sums, strict=True):
            out[i] = (total, len(rows[i][1]))
    return out


@dataclass(frozen=True)
class NLLItem:
    id: str
    question: str
    answer: str


def load_nll(
    path: str | Path,
    limit: int | None = None,
    question_field: str = "question",
    answer_field: str = "answer",
) -> list[NLLItem]:
    """The first `limit` (question, answer) rows of a JSONL; id: the row's `id`, else the
    question. Errors name the file, line and field."""
    items: list[NLLItem] = []
    for where, row in jsonl_rows(path, limit, "NLL"):
        for key in (question_field, answer_field):
            if not isinstance(row.get(key), str) or not row[key]:
                raise DistillError(f"{where}: field '{key}' must be a non-empty string")
        question = row[question_field]
        items.append(NLLItem(str(row.get("id", question)), question, row[answer_field]))
    return items


def nll_rows(items: Sequence[NLLItem], scores: Sequence[tuple[float, int]]) -> list[dict[str, Any]]:
    """Per item: id, question, summed NLL, target tokens and mean NLL per token."""
    return [
        {
            "id": item.id,
            "question": item.question,
            "nll_sum": round(total, 6),
            "tokens": n,
            "nll": round(total / n, 6),
        }
        for item, (total, n) in zip(items, scores, strict=True)
    ]


def nll_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, float | int]:
    """`nll`: mean of the items' mean token NLL; `nll_token_weighted`: summed NLL over
    summed tokens; `items`: how many."""
    tokens = sum(r["tokens"] for r in rows)
    return {
        "nll": sum(r["nll"] for r in rows) / len(rows) if rows else 0.0,
        "nll_token_weighted": sum(r["nll_sum"] for r in rows) / tokens if tokens else 0.0,
        "items": len(rows),
    }
