"""Per-row measurements that stage 2 and the dataset card need.

- Teacher context length: stage 2 feeds the teacher reference + question + trajectory,
  long by construction; rows that will not fit are flagged here, never truncated later.
  The count uses the shared `schemas.teacher_context_ids`, so it is stage 2's context.
- Supervision-compatibility gap (docs/METHOD.md "the problem", cause 1): the original model's
  mean per-token NLL on gold vs final answers; refinement should lower it.
"""

from __future__ import annotations

from typing import Any

from raft_data.backends import Backend, answer_ids, render_chat
from raft_data.cache import CallCache
from raft_data.calls import nll_cached
from raft_data.config import TeacherContextConfig
from schemas.manifest import StageTiming
from schemas.teacher_context import teacher_context_ids


def teacher_context_tokens(
    tokenizer: Any, question: str, final_answer: str, cfg: TeacherContextConfig
) -> tuple[int, bool, str | None]:
    """(tokens incl. room for the trajectory, over the limit?, reason).

    The context is `schemas.teacher_context_ids`, the ids stage 2 builds for the same
    template and format, so a row flagged here is one stage 2 could not fit.
    """
    ids = teacher_context_ids(tokenizer, question, final_answer, cfg.template, cfg.format)
    tokens = len(ids) + cfg.trajectory_tokens
    if tokens > cfg.max_tokens:
        return tokens, True, (
            f"teacher context {tokens} tokens (incl. {cfg.trajectory_tokens} for the trajectory) "
            f"> teacher_context.max_tokens {cfg.max_tokens}"
        )
    return tokens, False, None


def answer_nlls(
    backend: Backend,
    cache: CallCache,
    questions: list[str],
    answers: list[str],
    timing: StageTiming,
    batch_size: int,
    desc: str,
) -> list[float]:
    """Mean per-token NLL of each answer given its question, under the original model."""
    prompts = [render_chat(backend.tokenizer, q) for q in questions]
    targets = [answer_ids(backend.tokenizer, a) for a in answers]
    return nll_cached(backend, cache, prompts, targets, timing, batch_size, desc)
